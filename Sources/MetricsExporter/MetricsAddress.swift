import Glibc

/// Where the exporter listens: a numeric IPv4 address or a bracketed IPv6
/// address and a port (`127.0.0.1:9101`, `[::1]:9101`). Host names are
/// refused (nothing is resolved); port 0 asks the kernel for a free port.
/// Owns the parsed address and its `sockaddr` form.
public struct MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Family: Sendable, Equatable { case ipv4, ipv6 }

    public let host: String
    public let port: UInt16
    public let family: Family

    /// Parses `HOST:PORT`; nil for anything else (the caller names the option).
    public init?(_ text: String) {
        guard text.utf8.count <= 64, let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0 >= "0" && $0 <= "9" }),
              let port = Int(portText), port <= 65535 else { return nil }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
            host = String(host.dropFirst().dropLast())
            var a6 = in6_addr()
            guard inet_pton(AF_INET6, host, &a6) == 1 else { return nil }
            family = .ipv6
        } else {
            var a4 = in_addr()
            guard !host.contains(":"), inet_pton(AF_INET, host, &a4) == 1 else { return nil }
            family = .ipv4
        }
        self.host = host
        self.port = UInt16(port)
    }

    public var description: String { family == .ipv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The socket address to bind (network byte order), and its length.
    func withSockaddr<R>(port override: UInt16? = nil, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        let p = (override ?? port).bigEndian
        switch family {
        case .ipv4:
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = p
            _ = inet_pton(AF_INET, host, &sa.sin_addr)
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6:
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = p
            _ = inet_pton(AF_INET6, host, &sa.sin6_addr)
            return withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }
}
