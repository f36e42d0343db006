import CSys
import Glibc
import Synchronization
import SystemSupport

/// Why the exporter could not start (one line for the log).
public struct MetricsError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A tiny HTTP/1.x responder for Prometheus on a thread of its own: `GET
/// /metrics` gets the collector's text exposition, other paths 404, other
/// methods 405, anything unparsable 400; every response closes the
/// connection. Bounds what a client can hold: the request head's size, the
/// time to send it and to read the answer, the connections at once (one more
/// is closed at once). Never runs on a queue thread and never waits on one:
/// a scrape reads counters only. Between scrapes it syncs the collector once
/// a second, so a histogram's backlog never grows large. Owns the listening
/// socket, the connections, its thread and a stop eventfd.
public final class MetricsHTTPServer: @unchecked Sendable {
    public struct Limits: Sendable {
        /// Longest request head (bytes): longer gets 431.
        public var maxHead = 8192
        /// Connections at once; more are closed right after accept.
        public var maxConnections = 8
        /// A connection that has not finished its request (and read the answer) by then is closed (ms).
        public var connectionMillis = 5_000
        /// How often the collector syncs between scrapes (ms).
        public var syncMillis = 1_000
        public init() {}
    }

    final class Connection {
        let fd: Int32
        let deadline: UInt64
        var input: [UInt8] = []
        var output: [UInt8] = []
        var sent = 0
        var answered = false
        /// The answer is out and the write side shut: what the client still
        /// sends is read and dropped until it closes (or the deadline), so a
        /// close never resets a connection whose answer it has not read yet.
        var draining = false
        init(fd: Int32, deadline: UInt64) {
            self.fd = fd
            self.deadline = deadline
        }
    }

    public let address: MetricsAddress
    public let limits: Limits
    /// The port actually bound (differs from `address.port` when that was 0).
    public let port: UInt16
    public let collector: MetricsCollector
    private var listenFD: Int32
    private let stopFD: Int32
    private var thread: NamedThread?
    private var connections: [Connection] = []
    private let scrapeCount = Atomic<Int>(0)
    /// `/metrics` requests answered so far (any thread).
    public var scrapes: Int { scrapeCount.load(ordering: .relaxed) }

    /// Binds and listens on `address`; the thread starts with `start()`.
    public init(address: MetricsAddress, collector: MetricsCollector, limits: Limits = Limits()) throws(MetricsError) {
        self.address = address
        self.collector = collector
        self.limits = limits
        let domain = address.family == .ipv6 ? AF_INET6 : AF_INET
        let fd: Int32
        do {
            fd = try sysCall("socket") { socket(domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0) }
        } catch { throw MetricsError(message: "metrics: \(error.message)") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if address.family == .ipv6 { _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        do {
            _ = try sysCall("bind \(address)") { address.withSockaddr { bind(fd, $0, $1) } }
            _ = try sysCall("listen \(address)") { listen(fd, 16) }
        } catch {
            close(fd)
            throw MetricsError(message: "metrics: \(error.message)")
        }
        var bound = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        // sin_port and sin6_port sit at the same offset.
        port = UInt16(bigEndian: bound.sin6_port)
        do { stopFD = try EventFD().fd } catch {
            close(fd)
            throw MetricsError(message: "metrics: \(error.message)")
        }
        listenFD = fd
    }

    deinit {
        stop()
        close(stopFD)
    }

    public func start() throws(MetricsError) {
        guard listenFD >= 0, thread == nil else { throw MetricsError(message: "metrics: exporter already started or stopped") }
        do { thread = try NamedThread(name: "vb-metrics") { [self] in run() } } catch {
            throw MetricsError(message: "metrics: cannot start the exporter thread: \(error.message)")
        }
    }

    /// Ends the thread, closes every connection and the listening socket
    /// (the port is free when this returns). Safe to call more than once.
    public func stop() {
        if let t = thread {
            var one: UInt64 = 1
            _ = write(stopFD, &one, 8)
            t.join()
            thread = nil
        }
        for c in connections { close(c.fd) }
        connections = []
        if listenFD >= 0 {
            close(listenFD)
            listenFD = -1
        }
    }

    private func run() {
        var fds: [pollfd] = []
        var nextSync = Self.millis() + UInt64(limits.syncMillis)
        while true {
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0))
            for c in connections {
                fds.append(pollfd(fd: c.fd, events: Int16(c.answered && !c.draining ? POLLOUT : POLLIN), revents: 0))
            }
            var now = Self.millis()
            var wake = nextSync
            for c in connections { wake = min(wake, c.deadline) }
            let timeout = Int32(clamping: wake > now ? wake - now : 0)
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 && errno != EINTR { return }
            if fds[0].revents != 0 { return }
            now = Self.millis()
            var done = [Bool](repeating: false, count: connections.count)
            for (i, c) in connections.enumerated() {
                let rev = fds[i + 2].revents
                if rev & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    done[i] = c.draining ? discardInput(c) : c.answered ? false : readFrom(c)
                }
                if c.answered, !c.draining, !done[i] { done[i] = flush(c) }
                if rev & Int16(POLLERR | POLLNVAL) != 0 || now >= c.deadline { done[i] = true }
            }
            var kept: [Connection] = []
            for (i, c) in connections.enumerated() {
                if done[i] { close(c.fd) } else { kept.append(c) }
            }
            connections = kept
            if fds[1].revents & Int16(POLLIN) != 0 { acceptAll(now: now) }
            if now >= nextSync {
                collector.sync()
                nextSync = now + UInt64(limits.syncMillis)
            }
        }
    }

    private func acceptAll(now: UInt64) {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            guard connections.count < limits.maxConnections else {
                let r = HTTPRequestHead.response(status: 503, contentType: "text/plain", body: Array("too many connections\n".utf8))
                _ = r.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                close(fd)
                continue
            }
            connections.append(Connection(fd: fd, deadline: now + UInt64(limits.connectionMillis)))
        }
    }

    /// Drops what the client sends after its answer; true once it closed.
    private func discardInput(_ c: Connection) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if got > 0 { continue }
            if got < 0 && errno == EINTR { continue }
            return got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    /// Reads what is there; true when the connection is finished (closed or failed).
    private func readFrom(_ c: Connection) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return true }
            if got < 0 {
                if errno == EINTR { continue }
                return errno != EAGAIN && errno != EWOULDBLOCK
            }
            c.input.append(contentsOf: buffer[0..<got])
            switch HTTPRequestHead.parse(c.input, limit: limits.maxHead) {
            case .incomplete:
                continue
            case .reject(let status):
                answer(c, HTTPRequestHead.response(status: status, contentType: "text/plain",
                                                   body: Array("\(HTTPRequestHead.reason(status))\n".utf8)))
                return flush(c)
            case .request(let method, let path):
                if path == "/metrics" {
                    scrapeCount.wrappingAdd(1, ordering: .relaxed)
                    answer(c, HTTPRequestHead.response(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                                       body: collector.render(), includeBody: method == "GET"))
                } else {
                    answer(c, HTTPRequestHead.response(status: 404, contentType: "text/plain",
                                                       body: Array("only /metrics is served here\n".utf8),
                                                       includeBody: method == "GET"))
                }
                return flush(c)
            }
        }
    }

    private func answer(_ c: Connection, _ bytes: [UInt8]) {
        c.input = []
        c.output = bytes
        c.answered = true
    }

    /// Sends what it can; true when the client is gone. Once everything is
    /// sent the write side is shut and the connection drains (`draining`).
    private func flush(_ c: Connection) -> Bool {
        while c.sent < c.output.count {
            let n = c.output.withUnsafeBytes {
                send(c.fd, $0.baseAddress! + c.sent, $0.count - c.sent, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                return errno != EAGAIN && errno != EWOULDBLOCK
            }
            c.sent += n
        }
        shutdown(c.fd, Int32(SHUT_WR))
        c.draining = true
        return false
    }

    static func millis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}
