/// The little of an HTTP/1.x request the exporter looks at: the request
/// line of a complete head (up to the blank line). Anything else is an error
/// status for the client, never a trap. Pure: bytes in, a decision out.
enum HTTPRequestHead {
    enum Outcome: Equatable {
        /// The head is not complete yet (need more bytes).
        case incomplete
        /// GET or HEAD of `path` (query stripped).
        case request(method: String, path: String)
        /// Answer with this status and close.
        case reject(status: Int)
    }

    /// Looks for a complete head in `bytes` (at most `limit` bytes of it).
    static func parse(_ bytes: [UInt8], limit: Int) -> Outcome {
        guard let end = headEnd(bytes) else { return bytes.count > limit ? .reject(status: 431) : .incomplete }
        if end > limit { return .reject(status: 431) }
        let lineEnd = bytes.firstIndex(of: 0x0A) ?? end
        var line = bytes[..<lineEnd]
        if line.last == 0x0D { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .reject(status: 400) }
        let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
        // Printable ASCII (checked above): every byte is one character.
        func text(_ b: ArraySlice<UInt8>) -> String { String(decoding: b, as: UTF8.self) }
        guard parts.count == 3 else { return .reject(status: 400) }
        let method = text(parts[0]), target = text(parts[1]), version = text(parts[2])
        guard version == "HTTP/1.1" || version == "HTTP/1.0", target.hasPrefix("/") else {
            return .reject(status: 400)
        }
        guard method == "GET" || method == "HEAD" else { return .reject(status: 405) }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        return .request(method: method, path: path)
    }

    /// Index just past the blank line that ends the head (CRLF CRLF or LF LF).
    static func headEnd(_ b: [UInt8]) -> Int? {
        var i = 0
        while i < b.count {
            if b[i] == 0x0A {
                if i + 1 < b.count, b[i + 1] == 0x0A { return i + 2 }
                if i + 2 < b.count, b[i + 1] == 0x0D, b[i + 2] == 0x0A { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 431: "Request Header Fields Too Large"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }

    /// A complete response (Connection: close); `body` omitted for HEAD.
    static func response(status: Int, contentType: String, body: [UInt8], includeBody: Bool = true) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(reason(status))\r\n"
        head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + (includeBody ? body : [])
    }
}
