import SystemSupport
import BlockBackends
import RemoteImage
import ZstdImage

/// Fuzz target "parse": command-line text that becomes sizes and backend
/// specs (`ByteSize.parse`, `BackendSpec.parse` and each backend kind's
/// argument parser, as `BackendCatalog.standard` dispatches them). The first byte picks the
/// mode; the rest is the text (UTF-8, invalid sequences repaired the way
/// `CommandLine.arguments` repairs them) or the pieces of a spec to format.
/// Checks: no crash; whatever parses formats back to text that parses to the
/// same value (parse(format(x)) == x); sizes never exceed Int64.max; a file
/// spec keeps its path byte for byte.
public enum ParseFuzzer {
    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let mode = input.u8()
        switch mode % 4 {
        case 0:
            let text = String(decoding: input.rest(), as: UTF8.self)
            if let v = try? ByteSize.parse(text) { checkSize(v, text) }
        case 1:
            let text = String(decoding: input.rest(), as: UTF8.self)
            if let spec = try? ParsedSpec.parse(text) { checkSpec(spec, text) }
        case 2:
            // A size from its value: every spelling the parser documents.
            let v = input.u64() >> UInt64(input.u8() % 64)
            let text = format(v)
            if v <= UInt64(Int64.max) {
                guard let back = try? ByteSize.parse(text) else { fuzzCheck(false, "'\(text)' did not parse"); return }
                fuzzCheck(back == v, "'\(text)' parsed as \(back), not \(v)")
                checkSize(v, text)
            } else {
                fuzzCheck((try? ByteSize.parse(text)) == nil, "'\(text)' (> Int64.max) accepted")
            }
        default:
            // A spec from its parts: parse(format(spec)) == spec for every valid spec.
            let kind = input.u8()
            let a = pathText(&input)
            let b = pathText(&input)
            let c = input.u64() >> UInt64(input.u8() % 64)
            let spec: ParsedSpec
            if kind & 1 == 0 {
                guard !a.isEmpty, !a.utf8.contains(0) else { return }
                spec = .file(path: a)
            } else {
                guard !a.isEmpty, !a.utf8.contains(0), !a.utf8.contains(UInt8(ascii: ",")),
                      !b.utf8.contains(0), !b.utf8.contains(UInt8(ascii: ",")) else { return }
                spec = .zstd(ZstdBackendSpec(image: a, overlay: kind & 2 != 0 && !b.isEmpty ? b : nil,
                                             cacheBytes: kind & 4 != 0 ? min(c, UInt64(Int64.max)) : nil))
            }
            let text = format(spec)
            do {
                let back = try ParsedSpec.parse(text)
                fuzzCheck(back == spec, "'\(text)' parsed as \(back), not \(spec)")
            } catch {
                fuzzCheck(false, "'\(text)' (formatted from \(spec)) did not parse: \(error)")
            }
        }
    }

    static let units: [(UInt64, [String])] = [
        (1 << 40, ["T", "t", "TB", "TiB"]), (1 << 30, ["G", "g", "GB", "GiB"]),
        (1 << 20, ["M", "m", "MB", "MiB"]), (1 << 10, ["K", "k", "KB", "KiB"]), (1, ["", "B", "b"]),
    ]

    /// The shortest spelling: the largest unit that divides `v`.
    public static func format(_ v: UInt64) -> String {
        for (unit, names) in units where v != 0 && v % unit == 0 { return "\(v / unit)\(names[0])" }
        return "\(v)"
    }

    public static func format(_ spec: ParsedSpec) -> String {
        switch spec {
        case .file(let path): return "file:\(path)"
        case .zstd(let z):
            var s = "zstd:\(z.image)"
            if let overlay = z.overlay { s += ",overlay=\(overlay)" }
            if let cache = z.cacheBytes { s += ",cache=\(format(cache))" }
            return s
        case .remote(let r):
            return r.text
        }
    }

    static func checkSize(_ v: UInt64, _ text: String) {
        fuzzCheck(v <= UInt64(Int64.max), "'\(text)' parsed as \(v) > Int64.max")
        for (unit, names) in units where v % unit == 0 {
            for name in names {
                for spelling in ["\(v / unit)\(name)", " \(v / unit)\(name)\t"] {
                    let back = try? ByteSize.parse(spelling)
                    fuzzCheck(back == v, "'\(spelling)' parsed as \(String(describing: back)), not \(v) (from '\(text)')")
                }
            }
        }
    }

    static func checkSpec(_ spec: ParsedSpec, _ text: String) {
        switch spec {
        case .file(let path):
            fuzzCheck(!path.isEmpty && !path.utf8.contains(0), "file spec with path '\(path)'")
            fuzzCheck(Array("file:\(path)".utf8) == Array(text.utf8), "'\(text)' lost bytes: path '\(path)'")
        case .zstd(let z):
            fuzzCheck(!z.image.isEmpty && !z.image.utf8.contains(0), "zstd spec with image '\(z.image)'")
            if let overlay = z.overlay { fuzzCheck(!overlay.isEmpty, "empty overlay path") }
            if let cache = z.cacheBytes { fuzzCheck(cache <= UInt64(Int64.max), "cache \(cache)") }
        case .remote(let r):
            let url = r.url, options = r.options
            fuzzCheck(url.hasPrefix("http://") || url.hasPrefix("https://") || url.hasPrefix("s3://"), "remote URL '\(url)'")
            fuzzCheck(!url.unicodeScalars.contains(",") && !url.utf8.contains(0), "remote URL '\(url)' holds a comma or NUL")
            for o in options { fuzzCheck(o.unicodeScalars.contains("="), "remote option '\(o)' without '='") }
        }
        let again = format(spec)
        do {
            let back = try ParsedSpec.parse(again)
            fuzzCheck(back == spec, "'\(again)' (from '\(text)') parsed as \(back), not \(spec)")
        } catch {
            fuzzCheck(false, "'\(again)' (from '\(text)') did not parse: \(error)")
        }
    }

    /// Short text for paths: mostly path-like ASCII, sometimes any bytes.
    static func pathText(_ input: inout FuzzInput) -> String {
        let n = input.below(24)
        let raw = input.u8() & 0x80 != 0
        let alphabet = Array("/abcXYZ09._-=:, ~".utf8)
        let bytes = (0..<n).map { _ in raw ? input.u8() : alphabet[Int(input.u8()) % alphabet.count] }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A spec parsed the way `BackendCatalog.standard` parses it: split into
/// kind and arguments, then the kind's own argument parser.
public enum ParsedSpec: Equatable, Sendable {
    case file(path: String)
    case zstd(ZstdBackendSpec)
    case remote(RemoteBackendSpec)

    public static func parse(_ text: String) throws(BackendError) -> ParsedSpec {
        let spec = try BackendSpec.parse(text)
        switch spec.kind {
        case "file": return .file(path: try FileBackendProvider.path(of: spec.arguments))
        case "zstd": return .zstd(try ZstdBackendSpec.parse(spec.arguments))
        case "http", "https", "s3": return .remote(try RemoteBackendSpec.parse(kind: spec.kind, spec.arguments))
        default: throw .invalidSpec("unknown backend '\(spec.kind)'")
        }
    }
}
