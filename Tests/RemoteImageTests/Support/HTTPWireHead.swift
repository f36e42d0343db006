import ImageOverlay
import SystemSupport
import Foundation

/// One HTTP/1.x message head (request or status line plus header fields) as the fault proxy
/// sees it on the wire. Owns only its parsed copy; serializes back with `bytes`.
struct HTTPWireHead {
    /// "GET /x HTTP/1.1" or "HTTP/1.1 206 Partial Content".
    var startLine: String
    /// Header fields in wire order, names as received.
    var fields: [(name: String, value: String)]

    static let terminator: [UInt8] = [13, 10, 13, 10]

    /// Index just past the first CRLFCRLF in `buffer`, if the head is complete.
    static func headLength(in buffer: [UInt8]) -> Int? {
        guard buffer.count >= 4 else { return nil }
        var i = 0
        while i + 4 <= buffer.count {
            if buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i + 4 }
            i += 1
        }
        return nil
    }

    /// Parses the head bytes (through the blank line); nil if malformed.
    init?(_ bytes: ArraySlice<UInt8>) {
        guard let text = String(bytes: bytes, encoding: .isoLatin1) else { return nil }
        var lines = text.components(separatedBy: "\r\n")
        while lines.last == "" { lines.removeLast() }
        guard let first = lines.first, !first.isEmpty else { return nil }
        startLine = first
        fields = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            fields.append((name, value))
        }
    }

    init(startLine: String, fields: [(name: String, value: String)]) {
        self.startLine = startLine
        self.fields = fields
    }

    subscript(name: String) -> String? {
        fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Replaces every field called `name` with one field (or removes them when `value` is nil).
    mutating func set(_ name: String, _ value: String?) {
        let lower = name.lowercased()
        if let at = fields.firstIndex(where: { $0.name.lowercased() == lower }) {
            fields.removeAll { $0.name.lowercased() == lower }
            if let value { fields.insert((name, value), at: min(at, fields.count)) }
        } else if let value {
            fields.append((name, value))
        }
    }

    /// Method of a request head ("GET"), or nil.
    var method: String? { startLine.split(separator: " ").first.map(String.init) }

    /// Status code of a response head, or nil.
    var statusCode: Int? {
        let parts = startLine.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/") else { return nil }
        return Int(parts[1])
    }

    /// True when the request asks to close after this exchange (HTTP/1.1 `Connection: close`,
    /// or HTTP/1.0 without `Connection: keep-alive`).
    var wantsClose: Bool {
        let connection = self["Connection"]?.lowercased() ?? ""
        if connection.contains("close") { return true }
        if startLine.hasSuffix("HTTP/1.0") { return !connection.contains("keep-alive") }
        return false
    }

    var contentLength: Int? { self["Content-Length"].flatMap { Int($0) } }

    var bytes: [UInt8] {
        var text = startLine + "\r\n"
        for field in fields { text += field.name + ": " + field.value + "\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }
}
