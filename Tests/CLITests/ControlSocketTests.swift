import Foundation
import Glibc
import XCTest

@testable import vduse_blk

/// A device stand-in: counts what the server asked of it.
final class FakeTarget: ControlTarget {
    var resizes: [(UInt64, Bool)] = []
    var statsCalls = 0
    var stops = 0

    func stats() -> [String: Any] {
        statsCalls += 1
        return ["capacity_bytes": UInt64(1 << 20), "backend": [["memory_hits", UInt64(7)] as [Any]]]
    }
    func info() -> [String: Any] { ["name": "fake0", "pid": Int(getpid())] }
    func resize(bytes: UInt64, shrink: Bool) throws(ControlError) -> [String: Any] {
        if bytes == 12345 { throw ControlError(code: "bad_size", message: "not a multiple") }
        resizes.append((bytes, shrink))
        return ["old_bytes": UInt64(1 << 20), "new_bytes": bytes, "interrupt_sent": true]
    }
    func stop() -> [String: Any] {
        stops += 1
        return ["stopping": true]
    }
}

/// A raw client connection to a socket path, with a read timeout.
final class RawClient {
    let fd: Int32
    var pending: [UInt8] = []

    init?(path: String) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 { close(fd); return nil }
    }

    deinit { close(fd) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }

    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    /// The next reply line as an object; nil on EOF or timeout.
    func readLine(timeoutMs: Int32 = 3000) -> [String: Any]? {
        while true {
            if let nl = pending.firstIndex(of: 0x0A) {
                let line = Array(pending[..<nl])
                pending.removeSubrange(...nl)
                return (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any]
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, timeoutMs) > 0 else { return nil }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            pending.append(contentsOf: buf[0..<n])
        }
    }

    /// True once the server closed the connection (EOF/reset) within the timeout.
    func closedByPeer(timeoutMs: Int32 = 3000) -> Bool {
        var buf = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(Double(timeoutMs) / 1000)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) >= 0 else { return true }
            if p.revents == 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { return true }
        }
        return false
    }
}

/// The control socket: its protocol, and that hostile clients get an error
/// reply or a closed connection while everyone else is still served.
final class ControlSocketTests: XCTestCase {
    var dir = ""
    var path: String { "\(dir)/dev0.sock" }

    override func setUp() {
        var t = Array("/tmp/vb-ctl.XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&t))
    }

    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func serve(_ target: FakeTarget, limits: ControlServer.Limits = .init(), onStop: @escaping () -> Void = {}) throws -> ControlServer {
        let s = try ControlServer(path: path, target: target, limits: limits, onStop: onStop)
        try s.start()
        return s
    }

    func request(_ line: String) -> [String: Any]? {
        guard let c = RawClient(path: path) else { return nil }
        c.send(line + "\n")
        return c.readLine()
    }

    func assertError(_ line: String, _ code: String, file: StaticString = #filePath, lineNo: UInt = #line) {
        let r = request(line)
        XCTAssertEqual(r?["ok"] as? Bool, false, "\(line)", file: file, line: lineNo)
        XCTAssertEqual(r?["error"] as? String, code, "\(line): \(String(describing: r))", file: file, line: lineNo)
        XCTAssertNotNil(r?["message"] as? String, file: file, line: lineNo)
    }

    func testSocketIsRootOnlyAndRemovedOnStop() throws {
        let s = try serve(FakeTarget())
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        s.stop()
        XCTAssertNotEqual(access(path, F_OK), 0)
        XCTAssertNil(RawClient(path: path))
    }

    func testCommandsAnswerOneJSONLineEach() throws {
        let target = FakeTarget()
        let s = try serve(target)
        defer { s.stop() }
        let c = try XCTUnwrap(RawClient(path: path))
        // Several requests in one write, answered in order on one connection.
        c.send("{\"cmd\":\"stats\"}\n{\"cmd\":\"info\"}\r\n\n{\"cmd\":\"resize\",\"size\":\"2M\"}\n{\"cmd\":\"resize\",\"size\":4194304,\"shrink\":true}\n")
        let stats = try XCTUnwrap(c.readLine())
        XCTAssertEqual(stats["ok"] as? Bool, true)
        XCTAssertEqual(stats["capacity_bytes"] as? UInt64, 1 << 20)
        XCTAssertEqual(((stats["backend"] as? [Any])?.first as? [Any])?.first as? String, "memory_hits")
        let info = try XCTUnwrap(c.readLine())
        XCTAssertEqual(info["name"] as? String, "fake0")
        XCTAssertEqual(info["pid"] as? Int, Int(getpid()))
        let grow = try XCTUnwrap(c.readLine())
        XCTAssertEqual(grow["new_bytes"] as? UInt64, 2 << 20)
        XCTAssertEqual(try XCTUnwrap(c.readLine())["ok"] as? Bool, true)
        XCTAssertEqual(target.resizes.map { $0.0 }, [2 << 20, 4 << 20])
        XCTAssertEqual(target.resizes.map { $0.1 }, [false, true])
        let help = try XCTUnwrap(request("{\"cmd\":\"help\"}"))
        XCTAssertEqual(help["commands"] as? [String], ControlProtocol.commands)
        // The CLI's client speaks the same protocol.
        let viaClient = try ControlClient.request(path: path, ["cmd": "stats"])
        XCTAssertEqual(viaClient["ok"] as? Bool, true)
        XCTAssertEqual(target.statsCalls, 2)
    }

    func testDeeplyNestedOrHugeJSONIsAnErrorReplyNotACrash() {
        let target = FakeTarget()
        for depth in [600, 100_000] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let line = String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)
                let r = ControlProtocol.reply(to: Array(line.utf8), target: target)
                XCTAssertTrue(r.reply.contains("\"ok\":false"), "depth \(depth): \(r.reply.prefix(120))")
                XCTAssertFalse(r.stopAfter)
            }
        }
        let big = "{\"cmd\":\"" + String(repeating: "x", count: 1 << 20) + "\"}"
        let r = ControlProtocol.reply(to: Array(big.utf8), target: target)
        XCTAssertTrue(r.reply.contains("unknown_command"), String(r.reply.prefix(120)))
        XCTAssertLessThan(r.reply.utf8.count, 400, "the reply quotes at most a prefix of the command")
        XCTAssertEqual(target.statsCalls, 0)
    }

    func testRepliesRoundTripThroughTheJSONText() throws {
        let fields: [String: Any] = ["n": UInt64.max, "neg": -3, "d": 1.5, "s": "a/b \u{1}\"é", "t": true,
                                     "null": JSONText.null, "list": [1, "two", [3]] as [Any], "obj": ["k": false]]
        let text = try XCTUnwrap(JSONText.encode(fields))
        XCTAssertFalse(text.contains("\n"))
        let back = try XCTUnwrap(try JSONText.parse(Array(text.utf8)) as? [String: Any])
        XCTAssertEqual(back["n"] as? UInt64, UInt64.max)
        XCTAssertEqual(back["neg"] as? Int, -3)
        XCTAssertEqual(back["d"] as? Double, 1.5)
        XCTAssertEqual(back["s"] as? String, "a/b \u{1}\"é")
        XCTAssertEqual(back["t"] as? Bool, true)
        XCTAssertTrue(back["null"] is JSONText.Null)
        XCTAssertEqual((back["list"] as? [Any])?.count, 3)
        XCTAssertEqual((back["obj"] as? [String: Any])?["k"] as? Bool, false)
        XCTAssertNil(JSONText.encode(["x": Double.nan]), "NaN is not JSON")
        XCTAssertNil(JSONText.encode(["x": FakeTarget()]), "nor is an object")
    }

    func testMalformedRequestsGetAnErrorAndTheConnectionStaysUsable() throws {
        let target = FakeTarget()
        let s = try serve(target)
        defer { s.stop() }
        assertError("not json", "bad_json")
        assertError("{\"cmd\":", "bad_json")
        assertError("\u{1}\u{2}\u{ff}", "bad_json")
        assertError("[\"stats\"]", "bad_request")
        assertError("42", "bad_request")   // valid JSON (RFC 8259), not an object
        assertError("{}", "bad_request")
        assertError("{\"cmd\":7}", "bad_request")
        assertError("{\"cmd\":null}", "bad_request")
        assertError("{\"cmd\":\"format-disk\"}", "unknown_command")
        assertError("{\"cmd\":\"resize\"}", "bad_request")
        for size in ["true", "-1", "0", "1.5", "\"lots\"", "[1]", "{}", "null", "1e40"] {
            assertError("{\"cmd\":\"resize\",\"size\":\(size)}", "bad_request")
        }
        assertError("{\"cmd\":\"resize\",\"size\":1048576,\"shrink\":\"yes\"}", "bad_request")
        assertError("{\"cmd\":\"resize\",\"size\":1048576,\"shrink\":1}", "bad_request")
        // An error from the device itself keeps its code.
        assertError("{\"cmd\":\"resize\",\"size\":12345}", "bad_size")
        XCTAssertTrue(target.resizes.isEmpty, "no malformed resize reached the device")
        // One connection: an error, then a good request, both answered.
        let c = try XCTUnwrap(RawClient(path: path))
        c.send("garbage\n{\"cmd\":\"info\"}\n")
        XCTAssertEqual(c.readLine()?["error"] as? String, "bad_json")
        XCTAssertEqual(c.readLine()?["name"] as? String, "fake0")
    }

    func testOverlongLinesAreRefusedAndClosedWithoutHurtingOthers() throws {
        var limits = ControlServer.Limits()
        limits.maxLine = 1024
        let s = try serve(FakeTarget(), limits: limits)
        defer { s.stop() }
        let other = try XCTUnwrap(RawClient(path: path))
        // One huge line without a newline: the server stops reading at the cap.
        let huge = try XCTUnwrap(RawClient(path: path))
        huge.send([UInt8](repeating: 0x61, count: 1 << 20))
        XCTAssertEqual(huge.readLine()?["error"] as? String, "line_too_long")
        XCTAssertTrue(huge.closedByPeer())
        // A long line with a newline.
        let long = try XCTUnwrap(RawClient(path: path))
        long.send("{\"cmd\":\"" + String(repeating: "x", count: 2000) + "\"}\n")
        XCTAssertEqual(long.readLine()?["error"] as? String, "line_too_long")
        XCTAssertTrue(long.closedByPeer())
        // Just under the cap is fine.
        let pad = String(repeating: " ", count: 1000)
        XCTAssertEqual(request("{\"cmd\":\"info\"}" + pad)?["ok"] as? Bool, true)
        other.send("{\"cmd\":\"info\"}\n")
        XCTAssertEqual(other.readLine()?["ok"] as? Bool, true)
    }

    func testTooManyConnectionsAreTurnedAwayAndSlotsComeBack() throws {
        var limits = ControlServer.Limits()
        limits.maxConnections = 4
        let s = try serve(FakeTarget(), limits: limits)
        defer { s.stop() }
        var held: [RawClient] = []
        for _ in 0..<4 {
            let c = try XCTUnwrap(RawClient(path: path))
            c.send("{\"cmd\":\"info\"}\n")
            XCTAssertEqual(c.readLine()?["ok"] as? Bool, true)
            held.append(c)
        }
        let extra = try XCTUnwrap(RawClient(path: path))
        XCTAssertEqual(extra.readLine()?["error"] as? String, "busy")
        XCTAssertTrue(extra.closedByPeer())
        held.removeAll()  // closes them
        var served = false
        for _ in 0..<50 where !served {
            if request("{\"cmd\":\"info\"}")?["ok"] as? Bool == true { served = true } else { usleep(20_000) }
        }
        XCTAssertTrue(served, "a slot frees once its client goes")
    }

    func testAClientThatNeverReadsIsDroppedAndIdleOnesTimeOut() throws {
        var limits = ControlServer.Limits()
        limits.maxPendingOutput = 64 << 10
        limits.idleMillis = 500
        limits.stallMillis = 300
        let target = FakeTarget()
        let s = try serve(target, limits: limits)
        defer { s.stop() }
        let hog = try XCTUnwrap(RawClient(path: path))
        var rcv: Int32 = 4096
        setsockopt(hog.fd, SOL_SOCKET, SO_RCVBUF, &rcv, socklen_t(4))
        // Asks forever without reading a byte: the server must not buffer without bound or block.
        let request = Array(String(repeating: "{\"cmd\":\"stats\"}\n", count: 64).utf8)
        var sentOK = true
        let deadline = Date().addingTimeInterval(10)
        while sentOK, Date() < deadline {
            var p = pollfd(fd: hog.fd, events: Int16(POLLOUT), revents: 0)
            if poll(&p, 1, 200) <= 0 { continue }
            let n = request.withUnsafeBytes { Glibc.send(hog.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 && errno != EAGAIN { sentOK = false }
        }
        XCTAssertFalse(sentOK, "the server dropped the client that never reads")
        // Everyone else is still served.
        XCTAssertEqual(self.request("{\"cmd\":\"info\"}")?["ok"] as? Bool, true)
        // A connection that says nothing is closed after the idle time.
        let idle = try XCTUnwrap(RawClient(path: path))
        XCTAssertTrue(idle.closedByPeer(timeoutMs: 3000))
    }

    func testStopRepliesThenRunsTheStopAction() throws {
        let stopped = expectation(description: "onStop")
        let target = FakeTarget()
        let s = try serve(target, onStop: { stopped.fulfill() })
        defer { s.stop() }
        let r = try XCTUnwrap(request("{\"cmd\":\"stop\"}"))
        XCTAssertEqual(r["stopping"] as? Bool, true)
        wait(for: [stopped], timeout: 3)
        XCTAssertEqual(target.stops, 1)
    }

    func testAStaleSocketFileIsReplacedAndALiveOneRefused() throws {
        // A socket file nobody listens on (a crashed daemon's).
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(stale)
        let s = try serve(FakeTarget())
        defer { s.stop() }
        XCTAssertEqual(request("{\"cmd\":\"info\"}")?["ok"] as? Bool, true)
        XCTAssertThrowsError(try ControlServer(path: path, target: FakeTarget())) { e in
            XCTAssertEqual((e as? ControlError)?.code, "busy")
        }
        XCTAssertEqual(request("{\"cmd\":\"info\"}")?["ok"] as? Bool, true, "the live daemon keeps its socket")
    }

    func testClientReportsNoDaemonWhenNothingListens() {
        XCTAssertThrowsError(try ControlClient.request(path: "\(dir)/absent.sock", ["cmd": "stats"])) { e in
            guard case .noDaemon = e as? ControlClient.Failure else { return XCTFail("\(e)") }
        }
    }

    func testDiskUsageSeesMountsHoldersAndPartitions() throws {
        let sys = "\(dir)/sys"
        func mk(_ p: String) { _ = system("mkdir -p '\(sys)/\(p)'") }
        func put(_ p: String, _ s: String) { _ = FileManager.default.createFile(atPath: "\(sys)/\(p)", contents: Data(s.utf8)) }
        mk("vdb/holders"); put("vdb/dev", "254:16\n")
        mk("vdb/vdb1/holders"); put("vdb/vdb1/dev", "254:17\n")
        let mounts = "\(dir)/mountinfo"
        _ = FileManager.default.createFile(atPath: mounts, contents: Data("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n".utf8))
        let usage = DiskUsage(sysBlock: sys, mountinfo: mounts, devDir: "\(dir)/nodev")
        XCTAssertNil(usage.reason(disk: "vdb"))
        _ = FileManager.default.createFile(atPath: mounts, contents: Data(
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n40 22 254:17 / /mnt/data rw,relatime - ext4 /dev/vdb1 rw\n".utf8))
        XCTAssertEqual(usage.reason(disk: "vdb"), "/dev/vdb1 is mounted at /mnt/data")
        _ = FileManager.default.createFile(atPath: mounts, contents: Data())
        mk("vdb/holders/dm-0")
        XCTAssertEqual(usage.reason(disk: "vdb"), "/dev/vdb is held by dm-0")
    }
}
