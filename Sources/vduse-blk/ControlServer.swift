import CSys
import Glibc
import SystemSupport

/// Serves a device's control socket on a thread of its own: accepts Unix
/// stream connections, reads request lines, answers each with one reply
/// line (`ControlProtocol`). Never runs on a queue or VDUSE control thread,
/// and bounds what one client can hold: the line length, the connections,
/// the unsent reply bytes and the idle time. Owns the listening socket, its
/// path, the connections and a stop eventfd.
final class ControlServer: @unchecked Sendable {
    struct Limits {
        /// Longest request line (bytes, newline excluded): longer ones get `line_too_long` and are closed.
        var maxLine = 4096
        /// Connections at once; one more gets `busy` and is closed.
        var maxConnections = 16
        /// Reply bytes waiting for a client before its requests are no longer read (backpressure).
        var maxPendingOutput = 256 * 1024
        /// A client whose waiting replies make no progress this long is dropped (ms).
        var stallMillis = 5_000
        /// Kernel send buffer of each connection (bytes): how much a non-reader soaks up there.
        var socketBuffer: Int32 = 64 * 1024
        /// A connection with nothing to do for this long is closed (ms).
        var idleMillis = 30_000
    }

    final class Connection {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var lastActive: UInt64
        /// When the waiting replies last moved (or started waiting).
        var lastFlushProgress: UInt64 = 0
        /// The last send hit a full socket: the client is not keeping up.
        var blocked = false
        /// Close once the output is flushed.
        var closing = false
        init(fd: Int32, now: UInt64) {
            self.fd = fd
            lastActive = now
        }
    }

    let path: String
    let limits: Limits
    private let target: ControlTarget
    private let listenFD: Int32
    private let stopFD: Int32
    private var thread: NamedThread?
    private var connections: [Connection] = []
    /// Replies a `stop` request asked for: run after its reply is flushed.
    private var stopRequested = false
    private let onStop: () -> Void

    /// Binds `path` (mode 0600; a stale socket file is replaced, a live one
    /// refused) without starting the thread yet.
    init(path: String, target: ControlTarget, limits: Limits = Limits(), onStop: @escaping () -> Void = {}) throws(ControlError) {
        self.path = path
        self.target = target
        self.limits = limits
        self.onStop = onStop
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw ControlError(code: "path", message: "control socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
            raw[pathBytes.count] = 0
        }
        if Self.answers(addr) {
            throw ControlError(code: "busy", message: "another daemon serves \(path)")
        }
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ControlError(code: "socket", message: "socket: \(String(cString: strerror(errno)))") }
        // Created 0600 (umask), so no other user can connect even for an instant.
        let oldMask = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindErrno = errno
        umask(oldMask)
        guard rc == 0 else {
            close(fd)
            throw ControlError(code: "bind", message: "cannot bind \(path): \(String(cString: strerror(bindErrno)))")
        }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw ControlError(code: "listen", message: "listen \(path): \(String(cString: strerror(e)))")
        }
        let s: Int32
        do { s = try EventFD().fd } catch {
            close(fd)
            unlink(path)
            throw ControlError(code: "eventfd", message: error.message)
        }
        listenFD = fd
        stopFD = s
    }

    deinit {
        stop()
        close(listenFD)
        close(stopFD)
    }

    /// True when something accepts connections at `addr` (a running daemon).
    static func answers(_ addr: sockaddr_un) -> Bool {
        var a = addr
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }

    func start() throws(ControlError) {
        do {
            thread = try NamedThread(name: "vb-control-sock") { [self] in run() }
        } catch {
            throw ControlError(code: "thread", message: "cannot start the control socket thread: \(error)")
        }
    }

    /// Stops the thread, closes every connection and removes the socket file.
    func stop() {
        guard let t = thread else { return }
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        t.join()
        thread = nil
        for c in connections { close(c.fd) }
        connections = []
        unlink(path)
    }

    private func run() {
        var fds: [pollfd] = []
        while true {
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0))
            for c in connections {
                var ev = Int16(0)
                // Backpressure: a client that is not reading its replies is not read from either.
                if !c.closing && !c.blocked && c.output.count < limits.maxPendingOutput { ev |= Int16(POLLIN) }
                if !c.output.isEmpty { ev |= Int16(POLLOUT) }
                fds.append(pollfd(fd: c.fd, events: ev, revents: 0))
            }
            let n = poll(&fds, nfds_t(fds.count), 1000)
            if n < 0 && errno != EINTR { return }
            if fds[0].revents != 0 { return }
            let now = monotonicMillis()
            // Connections first (indices match `fds` from 2 on), then accept.
            for (i, c) in connections.enumerated() {
                let rev = fds[i + 2].revents
                if rev & Int16(POLLIN) != 0 { readFrom(c, now: now) }
                if rev & Int16(POLLOUT) != 0 || !c.output.isEmpty { flush(c, now: now) }
                if rev & Int16(POLLERR | POLLNVAL) != 0 { c.closing = true; c.output.removeAll() }
                if rev & Int16(POLLHUP) != 0 && rev & Int16(POLLIN) == 0 { c.closing = true; c.output.removeAll() }
                if now &- c.lastActive > UInt64(limits.idleMillis) { c.closing = true; c.output.removeAll() }
                if !c.output.isEmpty && now &- c.lastFlushProgress > UInt64(limits.stallMillis) {
                    // It asks but never reads: drop it.
                    c.closing = true
                    c.output.removeAll()
                }
            }
            connections.removeAll { c in
                if c.closing && c.output.isEmpty { close(c.fd); return true }
                return false
            }
            if fds[1].revents & Int16(POLLIN) != 0 { acceptAll(now: now) }
            if stopRequested && connections.allSatisfy({ $0.output.isEmpty }) {
                stopRequested = false
                onStop()
            }
        }
    }

    private func acceptAll(now: UInt64) {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var buffer = limits.socketBuffer
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
            guard connections.count < limits.maxConnections else {
                let line = Array((ControlProtocol.errorReply(ControlError(
                    code: "busy", message: "too many control connections (\(limits.maxConnections))")) + "\n").utf8)
                _ = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(fd)
                continue
            }
            connections.append(Connection(fd: fd, now: now))
        }
    }

    private func readFrom(_ c: Connection, now: UInt64) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !c.closing {
            let got = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { c.closing = true; return }
            if got < 0 {
                if errno == EINTR { continue }
                if errno != EAGAIN && errno != EWOULDBLOCK { c.closing = true; c.output.removeAll() }
                return
            }
            c.lastActive = now
            c.input.append(contentsOf: buffer[0..<got])
            while !c.closing, let nl = c.input.firstIndex(of: 0x0A) {
                var line = Array(c.input[..<nl])
                c.input.removeSubrange(...nl)
                if line.last == 0x0D { line.removeLast() }
                if line.count > limits.maxLine { tooLong(c); return }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                let (reply, stopAfter) = ControlProtocol.reply(to: line, target: target)
                queue(c, reply)
                if stopAfter { stopRequested = true }
            }
            if c.input.count > limits.maxLine { tooLong(c); return }
            // Enough replies wait: read more only once they move (see `run`).
            if c.output.count >= limits.maxPendingOutput { return }
        }
    }

    private func tooLong(_ c: Connection) {
        c.input.removeAll()
        queue(c, ControlProtocol.errorReply(ControlError(
            code: "line_too_long", message: "request line longer than \(limits.maxLine) bytes")))
        c.closing = true
    }

    private func queue(_ c: Connection, _ reply: String) {
        if c.output.isEmpty { c.lastFlushProgress = monotonicMillis() }
        c.output.append(contentsOf: reply.utf8)
        c.output.append(0x0A)
    }

    private func flush(_ c: Connection, now: UInt64) {
        while !c.output.isEmpty {
            let sent = c.output.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { c.blocked = true } else { c.closing = true; c.output.removeAll() }
                return
            }
            c.output.removeFirst(sent)
            c.blocked = false
            c.lastActive = now
            c.lastFlushProgress = now
        }
    }

    private func monotonicMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
