import ArgumentParser
@testable import BlockEngine
import Foundation
import Glibc
import XCTest

@testable import vduse_blk

/// `create --metrics`: numeric IPv4 or bracketed IPv6 with a port; anything
/// else is a usage error naming the option, before anything is opened.
final class MetricsOptionTests: XCTestCase {
    func create(_ metrics: String) -> [String] {
        ["create", "disk0", "--backend", "file:/tmp/disk.img", "--metrics", metrics]
    }

    func testAcceptsLoopbackAddresses() throws {
        for ok in ["127.0.0.1:9101", "[::1]:9101", "0.0.0.0:1", "10.1.2.3:65535"] {
            let c = try XCTUnwrap(try VduseBlk.parseAsRoot(create(ok)) as? CreateCommand, ok)
            XCTAssertEqual(c.metrics, ok)
        }
        let plain = try XCTUnwrap(try VduseBlk.parseAsRoot(["create", "d", "--backend", "file:/x"]) as? CreateCommand)
        XCTAssertNil(plain.metrics)
    }

    func testBadAddressesAreUsageErrorsNamingTheOption() {
        for bad in ["", "9101", ":9101", "localhost:9101", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "::1:9101",
                    "[::1]", "[::1]:x", "300.1.1.1:80", "127.0.0.1:80/metrics", "http://127.0.0.1:80",
                    String(repeating: "9", count: 5000)] {
            do {
                let c = try VduseBlk.parseAsRoot(create(bad))
                XCTFail("accepted --metrics \(bad) as \(type(of: c))")
            } catch {
                let message = VduseBlk.message(for: error)
                XCTAssertTrue(message.contains("--metrics"), "\(bad): \(message)")
                XCTAssertEqual(VduseBlk.exitCode(for: error), .validationFailure, bad)
            }
        }
    }
}

/// The per-queue counters in the control socket's `stats` reply.
final class QueueStatsReplyTests: XCTestCase {
    func testQueueCountersBecomeAJSONObject() throws {
        let c = QueueCounters(queueIndex: 2)
        for _ in 0..<3 { c.recordCompletion(.write, nanos: 4000) }
        c.recordCompletion(.read, nanos: 2000)
        c.recordBytes(read: 4096, written: 3 * 512)
        c.recordFailure(.write, result: -Int64(EIO))
        let fields = DeviceControlTarget.queueStats(c.snapshot(), index: c.queueIndex)
        let data = try JSONSerialization.data(withJSONObject: fields)
        let back = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(back["queue"] as? Int, 2)
        XCTAssertEqual((back["requests"] as? [String: Any])?["write"] as? Int, 3)
        XCTAssertEqual((back["requests"] as? [String: Any])?["read"] as? Int, 1)
        XCTAssertEqual((back["failures"] as? [String: Any])?["write"] as? Int, 1)
        XCTAssertNil((back["failures"] as? [String: Any])?["get_id"], "only backend kinds can fail")
        XCTAssertEqual(back["read_bytes"] as? Int, 4096)
        XCTAssertEqual(back["written_bytes"] as? Int, 1536)
        XCTAssertEqual(back["service_time_avg_us"] as? Int, 3)
    }
}
