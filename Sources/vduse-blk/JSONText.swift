import FoundationEssentials

/// JSON text <-> plain Swift values for the control socket and the CLI's
/// `--json` output, on FoundationEssentials' JSONDecoder/JSONEncoder (the
/// full Foundation, with ICU, is not loaded: it cost start-up time).
///
/// Parsed values are `String`, `Bool`, `UInt64` (whole numbers >= 0), `Int`
/// (negative whole numbers), `Double`, `[Any]`, `[String: Any]` and
/// `JSONText.null`. Encodable values are those plus the other fixed-width
/// integers. Owns no state.
enum JSONText {
    /// JSON `null`, as a value in `[String: Any]` / `[Any]`.
    struct Null: Sendable {}
    static let null = Null()

    /// The text is not one JSON value (or nests deeper than the decoder allows).
    struct ParseError: Error {}

    /// Parses one JSON text (any top-level value).
    static func parse(_ bytes: some Collection<UInt8>) throws(ParseError) -> Any {
        do {
            return try JSONDecoder().decode(DecodedValue.self, from: Data(bytes)).value
        } catch {
            throw ParseError()
        }
    }

    /// One line of JSON (no newline, keys sorted), or nil when `value` holds
    /// something JSON cannot carry (a non-finite number, another type).
    static func encode(_ value: Any) -> String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(EncodedValue(value: value)) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

/// An object key of any spelling.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

/// Decodes any JSON value into the plain values `JSONText` documents.
private struct DecodedValue: Decodable {
    let value: Any

    init(from decoder: any Decoder) throws {
        if var array = try? decoder.unkeyedContainer() {
            var out: [Any] = []
            while !array.isAtEnd { out.append(try array.decode(DecodedValue.self).value) }
            value = out
        } else if let object = try? decoder.container(keyedBy: AnyKey.self) {
            var out: [String: Any] = [:]
            for key in object.allKeys { out[key.stringValue] = try object.decode(DecodedValue.self, forKey: key).value }
            value = out
        } else {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() {
                value = JSONText.null
            } else if let b = try? single.decode(Bool.self) {
                value = b
            } else if let u = try? single.decode(UInt64.self) {
                value = u
            } else if let i = try? single.decode(Int.self) {
                value = i
            } else if let d = try? single.decode(Double.self) {
                value = d
            } else {
                value = try single.decode(String.self)
            }
        }
    }
}

/// Encodes the plain values `JSONText` documents; anything else throws.
private struct EncodedValue: Encodable {
    let value: Any

    func encode(to encoder: any Encoder) throws {
        switch value {
        case let v as [String: Any]:
            var c = encoder.container(keyedBy: AnyKey.self)
            for (k, x) in v { try c.encode(EncodedValue(value: x), forKey: AnyKey(k)) }
        case let v as [Any]:
            var c = encoder.unkeyedContainer()
            for x in v { try c.encode(EncodedValue(value: x)) }
        default:
            var c = encoder.singleValueContainer()
            switch value {
            case let v as String: try c.encode(v)
            case let v as Bool: try c.encode(v)
            case let v as Int: try c.encode(v)
            case let v as UInt64: try c.encode(v)
            case let v as Int64: try c.encode(v)
            case let v as UInt32: try c.encode(v)
            case let v as Int32: try c.encode(v)
            case let v as UInt16: try c.encode(v)
            case let v as UInt8: try c.encode(v)
            case let v as UInt: try c.encode(v)
            case let v as Double where v.isFinite: try c.encode(v)
            case is JSONText.Null: try c.encodeNil()
            default:
                throw EncodingError.invalidValue(value, .init(codingPath: encoder.codingPath,
                                                              debugDescription: "not a JSON value: \(type(of: value))"))
            }
        }
    }
}
