import ImageOverlay
import SystemSupport

/// The parts of an HTTP response head the range fetcher checks, built line by
/// line from what the server sent (hostile bytes: every line is bounded and
/// parsed defensively, anything malformed is simply not recorded). A new
/// status line (after a 100-continue or a redirect) starts over.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status = 0
    public var contentLength: UInt64?
    public var contentRange: ContentRange?
    /// The Content-Range header was present but unparseable.
    public var contentRangeMalformed = false
    public var etag: String?
    public var lastModified: String?

    public init() {}

    /// Longest header line recorded; longer lines are ignored.
    static let maxLine = 8192

    /// Feeds one raw header line (with or without its CRLF).
    public mutating func consume(line raw: UnsafeRawBufferPointer) {
        guard raw.count <= Self.maxLine else { return }
        var bytes = Array(raw)
        while let last = bytes.last, last == 0x0D || last == 0x0A { bytes.removeLast() }
        if bytes.starts(with: Array("HTTP/".utf8)) {
            self = HTTPResponseHead()
            status = Self.parseStatus(bytes)
            return
        }
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = String(decoding: bytes[..<colon], as: UTF8.self).lowercased()
        var valueBytes = bytes[(colon + 1)...]
        while let f = valueBytes.first, f == 0x20 || f == 0x09 { valueBytes.removeFirst() }
        while let l = valueBytes.last, l == 0x20 || l == 0x09 { valueBytes.removeLast() }
        guard valueBytes.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == 0x09 }) else { return }
        let value = String(decoding: valueBytes, as: UTF8.self)
        switch name {
        case "content-length":
            contentLength = Self.parseDecimal(Array(valueBytes))
        case "content-range":
            contentRange = ContentRange.parse(value)
            contentRangeMalformed = contentRange == nil
        case "etag":
            etag = value.isEmpty || value.utf8.count > 512 ? nil : value
        case "last-modified":
            lastModified = value.isEmpty || value.utf8.count > 128 ? nil : value
        default:
            break
        }
    }

    /// "HTTP/1.1 206 Partial Content" -> 206 (0 when malformed).
    static func parseStatus(_ bytes: [UInt8]) -> Int {
        guard let space = bytes.firstIndex(of: 0x20) else { return 0 }
        let digits = bytes[(space + 1)...].prefix(while: { $0 != 0x20 })
        guard digits.count == 3, let n = parseDecimal(Array(digits)), (100...599).contains(n) else { return 0 }
        return Int(n)
    }

    /// A non-empty run of ASCII digits that fits in UInt64, nothing else.
    static func parseDecimal(_ bytes: [UInt8]) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        var n: UInt64 = 0
        for b in bytes {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            let (m, o1) = n.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
            if o1 || o2 { return nil }
            n = a
        }
        return n
    }
}

/// A `Content-Range: bytes FIRST-LAST/TOTAL` value (TOTAL may be `*`).
/// Only well-formed ranges parse: FIRST <= LAST, and LAST < TOTAL when known
/// (LAST < UInt64.max when not, so `length` always fits: fuzz-remote found
/// `bytes 0-18446744073709551615/*` trapping in `length`).
public struct ContentRange: Sendable, Equatable {
    public var first: UInt64
    public var last: UInt64
    public var total: UInt64?

    public init(first: UInt64, last: UInt64, total: UInt64?) {
        self.first = first
        self.last = last
        self.total = total
    }

    public var length: UInt64 { last - first + 1 }

    public static func parse(_ text: String) -> ContentRange? {
        let bytes = Array(text.utf8)
        guard bytes.count <= 128, bytes.starts(with: Array("bytes ".utf8)) else { return nil }
        let rest = bytes.dropFirst(6)
        guard let dash = rest.firstIndex(of: UInt8(ascii: "-")),
              let slash = rest.firstIndex(of: UInt8(ascii: "/")), dash < slash else { return nil }
        guard let first = HTTPResponseHead.parseDecimal(Array(rest[..<dash])),
              let last = HTTPResponseHead.parseDecimal(Array(rest[(dash + 1)..<slash])), first <= last else { return nil }
        let totalBytes = Array(rest[(slash + 1)...])
        if totalBytes == [UInt8(ascii: "*")] {
            return last < UInt64.max ? ContentRange(first: first, last: last, total: nil) : nil
        }
        guard let total = HTTPResponseHead.parseDecimal(totalBytes), last < total else { return nil }
        return ContentRange(first: first, last: last, total: total)
    }
}
