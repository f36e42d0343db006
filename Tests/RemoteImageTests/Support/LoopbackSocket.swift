import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// Thin Glibc TCP helpers for the test fixtures (IPv4; listeners on loopback only). Owns nothing: every
/// function hands its file descriptor to the caller, who must close it. All sockets are
/// created close-on-exec so spawned helpers (nginx, curl) never inherit them.
enum LoopbackSocket {
    struct Failure: Error, CustomStringConvertible {
        let call: String
        let code: Int32
        var description: String { "\(call) failed: \(String(cString: strerror(code))) (errno \(code))" }
    }

    /// A listening socket on 127.0.0.1 at a kernel-chosen free port.
    static func listen(backlog: Int32 = 128) throws -> (fd: Int32, port: Int) {
        let fd = try makeSocket()
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if bound != 0 || Glibc.listen(fd, backlog) != 0 {
            let code = errno
            close(fd)
            throw Failure(call: bound != 0 ? "bind" : "listen", code: code)
        }
        return (fd, try localPort(fd))
    }

    /// A port that was free a moment ago (bound to port 0, read back, released). Another
    /// process may grab it before the caller binds it, so callers retry on EADDRINUSE.
    static func freePort() throws -> Int {
        let (fd, port) = try listen(backlog: 1)
        close(fd)
        return port
    }

    /// A connected socket to host:port; `host` is an IPv4 literal.
    static func connect(host: String = "127.0.0.1", port: Int) throws -> Int32 {
        var addr = loopback(port: port)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Failure(call: "inet_pton(\(host))", code: EINVAL) }
        let fd = try makeSocket()
        var rc: Int32
        repeat {
            rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } while rc != 0 && errno == EINTR
        if rc != 0 {
            let code = errno
            close(fd)
            throw Failure(call: "connect", code: code)
        }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// True when something accepts TCP connections on 127.0.0.1:port right now.
    static func isAccepting(port: Int) -> Bool {
        guard let fd = try? connect(port: port) else { return false }
        close(fd)
        return true
    }

    /// Writes all of `bytes`; false on any error (the peer went away). Never raises SIGPIPE.
    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }

    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { sendAll(fd, $0) }
    }

    /// Receives into `scratch` (its whole count is the limit); returns the byte count,
    /// 0 on EOF, -1 on error. The caller reads `scratch[0..<n]`.
    static func receive(_ fd: Int32, into scratch: inout [UInt8]) -> Int {
        var n: Int
        repeat {
            n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        } while n < 0 && errno == EINTR
        return n
    }

    private static func makeSocket() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(call: "socket", code: errno) }
        return fd
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        return addr
    }

    private static func localPort(_ fd: Int32) throws -> Int {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw Failure(call: "getsockname", code: code)
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
