import Foundation
import Glibc
import SystemSupport

/// A TCP client that sends raw bytes (well-formed requests or garbage) and
/// reads whatever comes back until the server closes, within a timeout.
final class RawHTTPClient {
    let fd: Int32

    /// Connects to 127.0.0.1:`port` (or ::1 with `ipv6`); nil if it cannot.
    init?(port: UInt16, ipv6: Bool = false) {
        fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var rc: Int32
        if ipv6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            _ = inet_pton(AF_INET6, "::1", &a.sin6_addr)
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard rc == 0 else { close(fd); return nil }
    }

    deinit { close(fd) }

    /// Sends `bytes` (what the kernel takes; a closed peer is not an error here).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Int {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        return sent
    }

    func send(_ text: String) { send(Array(text.utf8)) }

    /// Reads until end of stream or `timeout` s; nil on timeout (the server never closed).
    func readAll(timeout: Double = 5) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = monotonicSeconds() + timeout
        while true {
            let left = deadline - monotonicSeconds()
            if left <= 0 { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(left * 1000) + 1) <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return out }
            if n < 0 { return errno == ECONNRESET ? out : nil }
            out += buffer[0..<n]
        }
    }

    /// A whole exchange: status code, headers (lower-cased names) and body.
    static func get(port: UInt16, path: String = "/metrics", method: String = "GET", ipv6: Bool = false)
        -> (status: Int, headers: [String: String], body: String)? {
        guard let c = RawHTTPClient(port: port, ipv6: ipv6) else { return nil }
        c.send("\(method) \(path) HTTP/1.1\r\nHost: test\r\nUser-Agent: test\r\n\r\n")
        guard let raw = c.readAll() else { return nil }
        return parse(raw)
    }

    static func parse(_ raw: [UInt8]) -> (status: Int, headers: [String: String], body: String)? {
        let text = String(decoding: raw, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let first = head.first, first.hasPrefix("HTTP/1.1 "), let status = Int(first.dropFirst(9).prefix(3)) else { return nil }
        var headers: [String: String] = [:]
        for h in head.dropFirst() {
            guard let colon = h.firstIndex(of: ":") else { return nil }
            headers[h[..<colon].lowercased()] = h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, headers, String(text[split.upperBound...]))
    }
}
