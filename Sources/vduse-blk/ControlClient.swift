import ArgumentParser
import Glibc

/// The CLI's side of a device's control socket: one request line, one reply line.
enum ControlClient {
    enum Failure: Error {
        /// No daemon answers (no socket file, or nobody listening on it).
        case noDaemon
        /// A daemon answered badly or not in time.
        case broken(String)
    }

    /// Sends `request` to NAME's daemon and returns its reply object.
    static func request(name: String, _ request: [String: Any], timeoutMillis: Int32 = 10_000) throws(Failure) -> [String: Any] {
        try self.request(path: ControlSocketPath.path(for: name), request, timeoutMillis: timeoutMillis)
    }

    static func request(path: String, _ request: [String: Any], timeoutMillis: Int32 = 10_000) throws(Failure) -> [String: Any] {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .noDaemon }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .broken("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw .noDaemon }
        guard let text = JSONText.encode(request) else { throw .broken("request not encodable") }
        var line = Array(text.utf8)
        line.append(0x0A)
        var sent = 0
        while sent < line.count {
            let n = line[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .broken("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = Int64(deadline.tv_sec) * 1000 + Int64(deadline.tv_nsec) / 1_000_000 + Int64(timeoutMillis)
        while !reply.contains(0x0A) {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let left = end - (Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000)
            guard left > 0 else { throw .broken("no reply within \(timeoutMillis / 1000) s") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(left))
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .broken("the daemon closed the connection without a reply") }
            reply.append(contentsOf: buffer[0..<n])
            if reply.count > 16 << 20 { throw .broken("reply too long") }
        }
        let first = reply[..<reply.firstIndex(of: 0x0A)!]
        guard let object = try? JSONText.parse(first), let dict = object as? [String: Any] else {
            throw .broken("the reply is not a JSON object")
        }
        return dict
    }

    /// The reply's message when it is an error reply (`ok` false), else nil.
    /// A command-line request: sends `request` to NAME's daemon and returns
    /// its successful reply; a missing daemon, a broken socket or an error
    /// reply is printed as one line and ends the command with status 1.
    static func commandRequest(name: String, _ request: [String: Any], timeoutMillis: Int32 = 10_000) throws -> [String: Any] {
        let reply: [String: Any]
        do {
            reply = try self.request(name: name, request, timeoutMillis: timeoutMillis)
        } catch {
            switch error {
            case .noDaemon: printError("no running daemon for \(name) (nothing answers on \(ControlSocketPath.path(for: name)))")
            case .broken(let why): printError("\(name): control socket: \(why)")
            }
            throw ExitCode.failure
        }
        if let message = errorMessage(reply) {
            printError("\(name): \(message)")
            throw ExitCode.failure
        }
        return reply
    }

    static func errorMessage(_ reply: [String: Any]) -> String? {
        if (reply["ok"] as? Bool) == true { return nil }
        return (reply["message"] as? String) ?? (reply["error"] as? String) ?? "the daemon refused"
    }

    /// One JSON line for scripts.
    static func jsonLine(_ object: Any) -> String {
        JSONText.encode(object) ?? "{}"
    }
}
