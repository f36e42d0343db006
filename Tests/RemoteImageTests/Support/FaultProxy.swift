import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// A fault-injecting HTTP/1.1 loopback proxy for range-fetch tests, placed between a client
/// (libcurl, the curl CLI) and an upstream server (usually `NginxFixture`).
///
/// Owns a listening socket on 127.0.0.1 (free port), an accept thread and one thread per
/// client connection (all tracked by its `FaultProxyCore`). Client connections are kept alive
/// across requests unless the client sends `Connection: close`; each request is forwarded over
/// its own fresh upstream connection. A fault plan, settable from any thread at any time, decides
/// what the next requests get. `stop()` (also run on deinit) shuts every socket down, wakes
/// stalled connections and waits for all threads; it returns promptly even mid-stall.
final class FaultProxy: @unchecked Sendable {
    /// What one request gets.
    enum Fault: Sendable, Equatable {
        /// Forward unchanged.
        case pass
        /// Reply with this status and a small text body; upstream is not contacted.
        case status(Int)
        /// Read the request, send nothing for this long, then close the connection.
        case stall(seconds: Double)
        /// Forward status and headers, then only half the body, then close the connection.
        case truncate
        /// Forward, but shift the `Content-Range` header by +512 bytes (body unchanged).
        case wrongRange
        /// Forward, but replace the total in `Content-Range` ("bytes a-b/TOTAL") with this text.
        case claimTotal(String)
        /// Read the request and close the connection without replying.
        case dropConnection
        /// Forward with the body paced at about this many bytes per second.
        case slowBody(bytesPerSecond: Int)
    }

    let port: Int
    private let core: FaultProxyCore

    /// Starts listening on 127.0.0.1 at a free port, forwarding to `upstreamHost:upstreamPort`
    /// (`upstreamHost` is an IPv4 literal).
    init(upstreamHost: String = "127.0.0.1", upstreamPort: Int) throws {
        let (listener, port) = try LoopbackSocket.listen()
        self.port = port
        let core = FaultProxyCore(upstreamHost: upstreamHost, upstreamPort: upstreamPort)
        self.core = core
        _ = core.register(listener)
        core.spawn(name: "FaultProxy.accept:\(port)") {
            Self.acceptLoop(listener: listener, core: core)
        }
    }

    /// Convenience: proxy in front of a running nginx fixture.
    convenience init(upstream: NginxFixture) throws {
        try self.init(upstreamPort: upstream.port)
    }

    deinit { core.stop() }

    func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }

    /// The next `count` requests get `fault`, then requests pass again (`Int.max`: forever).
    /// Replaces any plan in progress.
    func inject(_ fault: Fault, count: Int = 1) { core.inject(fault, count: count) }

    /// Back to pass-through for every request.
    func clearFaults() { core.inject(.pass, count: 0) }

    /// Requests seen (complete request heads read from clients), faulted or not.
    var requests: Int { core.snapshot.requests }
    /// Requests that got a fault other than `.pass`.
    var faultsInjected: Int { core.snapshot.faultsInjected }
    /// Bytes of upstream responses (heads and bodies) written to clients.
    var bytesForwarded: Int { core.snapshot.bytesForwarded }
    /// Client connections accepted (1 for several requests on one keep-alive connection).
    var connectionsAccepted: Int { core.snapshot.connectionsAccepted }

    /// Closes the listener and every connection, waits for all proxy threads. Idempotent.
    func stop() { core.stop() }

    private static func acceptLoop(listener: Int32, core: FaultProxyCore) {
        defer { core.close(listener) }
        while true {
            let fd = accept(listener, nil, nil)
            if fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            if fd < 0 {
                if core.isStopping { return }
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            guard core.register(fd) else {
                Glibc.close(fd)
                return
            }
            core.countConnection()
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            core.spawn(name: "FaultProxy.conn:\(fd)") {
                FaultProxyConnection(client: fd, core: core).serve()
            }
        }
    }
}
