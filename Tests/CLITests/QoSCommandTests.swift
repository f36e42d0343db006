import ArgumentParser
import BlockEngine
import Foundation
import Glibc
import XCTest

@testable import vduse_blk

/// A device stand-in with a real limiter, answering `set` as the daemon does.
final class LimiterTarget: ControlTarget {
    let limiter = QoSLimiter(clock: .manual())
    func stats() -> [String: Any] { ["capacity_bytes": UInt64(1 << 20), "limits": QoSWire.object(limiter.limits)] }
    func info() -> [String: Any] { ["name": "qos0"] }
    func resize(bytes: UInt64, shrink: Bool) throws(ControlError) -> [String: Any] { [:] }
    func stop() -> [String: Any] { [:] }
    func setLimits(_ changes: [String: UInt64]) throws(ControlError) -> [String: Any] {
        ["limits": QoSWire.object(try QoSWire.apply(changes, to: limiter))]
    }
}

/// The `--limit-*` options of `create` and `set`, and `set` on the control
/// socket: good values reach the limiter, hostile ones get a usage error
/// naming the option (command line) or an error reply (socket) and change nothing.
final class QoSCommandTests: XCTestCase {
    func parse(_ arguments: [String]) throws -> ParsableCommand { try VduseBlk.parseAsRoot(arguments) }

    func assertRejected(_ arguments: [String], _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let command = try parse(arguments)
            XCTFail("accepted \(arguments) as \(type(of: command))", file: file, line: line)
        } catch {
            let message = VduseBlk.message(for: error)
            XCTAssertTrue(message.contains(expected), "\(arguments): \"\(message)\" lacks \"\(expected)\"", file: file, line: line)
            XCTAssertEqual(VduseBlk.exitCode(for: error), .validationFailure, "\(arguments)", file: file, line: line)
        }
    }

    func create(_ extra: [String]) -> [String] { ["create", "disk0", "--backend", "file:/tmp/disk.img"] + extra }

    func testCreateTakesEveryLimit() throws {
        let c = try XCTUnwrap(try parse(create([
            "--limit-iops", "500", "--limit-read-iops", "300", "--limit-write-iops", "none",
            "--limit-bps", "64M", "--limit-read-bps", "4K", "--limit-write-bps", "0",
        ])) as? CreateCommand)
        XCTAssertEqual(try c.qos.limits(), QoSLimits(iops: 500, readIOPS: 300, writeIOPS: 0, bps: 64 << 20, readBPS: 4096, writeBPS: 0))
        let plain = try XCTUnwrap(try parse(create([])) as? CreateCommand)
        XCTAssertEqual(try plain.qos.limits(), .unlimited)
    }

    func testHostileLimitValuesAreUsageErrorsNamingTheOption() {
        for bad in ["abc", "-5", "1.5", "", " ", "10k", "99999999999999999999999", "0x10", "10000001"] {
            assertRejected(create(["--limit-iops", bad]), "--limit-iops")
            assertRejected(["set", "disk0", "--limit-write-iops", bad], "--limit-write-iops")
        }
        for bad in ["100", "4095", "fast", "-1M", "2P", "9999999T", "1.5M"] {
            assertRejected(create(["--limit-bps", bad]), "--limit-bps")
            assertRejected(["set", "disk0", "--limit-read-bps", bad], "--limit-read-bps")
        }
    }

    func testSetNeedsANameAndAtLeastOneLimit() throws {
        assertRejected(["set", "disk0"], "at least one limit")
        assertRejected(["set", "../x", "--limit-iops", "5"], "name")
        let s = try XCTUnwrap(try parse(["set", "disk0", "--limit-iops", "500", "--limit-bps", "none"]) as? SetCommand)
        XCTAssertEqual(try s.qos.changes(), ["iops": 500, "bps": 0])
    }

    func reply(_ line: String, _ target: LimiterTarget) -> [String: Any] {
        let text = ControlProtocol.reply(to: Array(line.utf8), target: target).reply
        return (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    func testSetOverTheSocketProtocolChangesOnlyTheNamedLimits() throws {
        let t = LimiterTarget()
        var r = reply(#"{"cmd":"set","limits":{"iops":500,"read_bps":"20M"}}"#, t)
        XCTAssertEqual(r["ok"] as? Bool, true, "\(r)")
        XCTAssertEqual(t.limiter.limits, QoSLimits(iops: 500, readBPS: 20 << 20))
        XCTAssertEqual((r["limits"] as? [String: Any])?["iops"] as? UInt64, 500)
        r = reply(#"{"cmd":"set","limits":{"write_iops":100,"iops":"none"}}"#, t)
        XCTAssertEqual(r["ok"] as? Bool, true, "\(r)")
        XCTAssertEqual(t.limiter.limits, QoSLimits(writeIOPS: 100, readBPS: 20 << 20))
        r = reply(#"{"cmd":"stats"}"#, t)
        XCTAssertEqual((r["limits"] as? [String: Any])?["write_iops"] as? UInt64, 100)
    }

    func testHostileSetRequestsGetAnErrorAndChangeNothing() {
        let t = LimiterTarget()
        _ = reply(#"{"cmd":"set","limits":{"iops":500}}"#, t)
        let before = t.limiter.limits
        let cases: [(String, String)] = [
            (#"{"cmd":"set"}"#, "bad_request"),
            (#"{"cmd":"set","limits":5}"#, "bad_request"),
            (#"{"cmd":"set","limits":[1,2]}"#, "bad_request"),
            (#"{"cmd":"set","limits":{}}"#, "bad_request"),
            (#"{"cmd":"set","limits":{"rm -rf":1}}"#, "bad_request"),
            (#"{"cmd":"set","limits":{"iops":-1}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":1.5}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":true}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":null}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":{"x":1}}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":1e30}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"iops":18446744073709551615}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"bps":100}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"bps":"lots"}}"#, "bad_limit"),
            (#"{"cmd":"set","limits":{"read_bps":"20M","write_iops":-3}}"#, "bad_limit"),
        ]
        for (line, code) in cases {
            let r = reply(line, t)
            XCTAssertEqual(r["ok"] as? Bool, false, line)
            XCTAssertEqual(r["error"] as? String, code, "\(line): \(r)")
            XCTAssertNotNil(r["message"] as? String, line)
            XCTAssertEqual(t.limiter.limits, before, "\(line) changed the limits")
        }
    }

    /// The real server and client: `set` and `stats` over a socket.
    func testSetAndStatsThroughTheSocket() throws {
        var tmpl = Array("/tmp/vb-qos.XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&tmpl))
        defer { _ = system("rm -rf '\(dir)'") }
        let t = LimiterTarget()
        let server = try ControlServer(path: "\(dir)/q.sock", target: t)
        try server.start()
        defer { server.stop() }
        let r = try ControlClient.request(path: "\(dir)/q.sock", ["cmd": "set", "limits": ["bps": 1 << 20]])
        XCTAssertNil(ControlClient.errorMessage(r))
        XCTAssertEqual(t.limiter.limits.bps, 1 << 20)
        let s = try ControlClient.request(path: "\(dir)/q.sock", ["cmd": "stats"])
        XCTAssertEqual((s["limits"] as? [String: Any])?["bps"] as? UInt64, 1 << 20)
    }
}
