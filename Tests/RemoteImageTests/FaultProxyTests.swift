import ImageOverlay
import SystemSupport
import Foundation
import Glibc
import TestSupport
import XCTest

/// Proves the HTTP fixtures themselves: `NginxFixture` serves byte-exact ranges, and
/// `FaultProxy` passes traffic through, injects each fault, keeps connections alive and stops
/// promptly. Each test owns a temp directory with a random 3 MiB image, an nginx and a proxy.
final class FaultProxyTests: XCTestCase {
    private static let imageSize = 3 * 1024 * 1024

    private var dir = ""
    private var tempDir: TempDir?
    private var image = Data()
    private var nginx: NginxFixture!
    private var proxy: FaultProxy!

    override func setUpWithError() throws {
        tempDir = try TempDir(label: "fault")
        dir = tempDir!.path
        var generator = SystemRandomNumberGenerator()
        var words = [UInt64](repeating: 0, count: Self.imageSize / 8)
        for i in words.indices { words[i] = generator.next() }
        image = words.withUnsafeBytes { Data($0) }
        try image.write(to: URL(fileURLWithPath: dir + "/disk.img"))
        nginx = try NginxFixture(root: dir)
        proxy = try FaultProxy(upstream: nginx)
    }

    override func tearDown() {
        proxy?.stop()
        nginx?.stop()
        proxy = nil
        nginx = nil
        tempDir = nil
    }

    private var expectedRange: Data { image.subdata(in: 1000..<2000) }

    // MARK: nginx alone

    func testNginxServesWholeFileAndByteExactRange() throws {
        let whole = try CurlRun.run([nginx.url("disk.img")])
        XCTAssertEqual(whole.exitCode, 0, whole.stderr)
        XCTAssertEqual(whole.statusCodes, [200])
        XCTAssertEqual(whole.body, image)
        XCTAssertEqual(whole.header("Accept-Ranges"), "bytes")
        XCTAssertNotNil(whole.header("ETag"))

        let range = try CurlRun.run(["-r", "1000-1999", nginx.url("disk.img")])
        XCTAssertEqual(range.exitCode, 0, range.stderr)
        XCTAssertEqual(range.statusCodes, [206])
        XCTAssertEqual(range.header("Content-Range"), "bytes 1000-1999/\(Self.imageSize)")
        XCTAssertEqual(range.body, expectedRange)
        XCTAssertEqual(range.header("ETag"), whole.header("ETag"))
    }

    func testNginxFixtureRequiresTheBinary() {
        XCTAssertThrowsError(try NginxFixture(root: dir, binary: "/nonexistent/nginx")) { error in
            XCTAssertTrue("\(error)".contains("nginx-light"), "\(error)")
        }
    }

    // MARK: through the proxy

    func testPassThroughIsIdentical() throws {
        let whole = try CurlRun.run([proxy.url("disk.img")])
        XCTAssertEqual(whole.exitCode, 0, whole.stderr)
        XCTAssertEqual(whole.body, image)
        let range = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(range.statusCodes, [206])
        XCTAssertEqual(range.header("Content-Range"), "bytes 1000-1999/\(Self.imageSize)")
        XCTAssertEqual(range.body, expectedRange)
        XCTAssertEqual(proxy.requests, 2)
        XCTAssertEqual(proxy.faultsInjected, 0)
        // The proxy counts a response's bytes after its last write, which may
        // land a moment after curl has read them: wait (bounded) for the count.
        let deadline = Date().addingTimeInterval(5)
        while proxy.bytesForwarded <= Self.imageSize + 1000, Date() < deadline { usleep(10_000) }
        XCTAssertGreaterThan(proxy.bytesForwarded, Self.imageSize + 1000)
    }

    func testStatusFaultThenPass() throws {
        proxy.inject(.status(503), count: 1)
        let failed = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(failed.exitCode, 0, failed.stderr)
        XCTAssertEqual(failed.statusCodes, [503])
        let next = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(next.statusCodes, [206])
        XCTAssertEqual(next.body, expectedRange)
        XCTAssertEqual(proxy.requests, 2)
        XCTAssertEqual(proxy.faultsInjected, 1)
    }

    func testTruncateGivesShortTransfer() throws {
        proxy.inject(.truncate, count: 1)
        let short = try CurlRun.run([proxy.url("disk.img")])
        XCTAssertEqual(short.exitCode, 18, "expected CURLE_PARTIAL_FILE: \(short.stderr)")
        XCTAssertEqual(short.statusCodes, [200])
        XCTAssertEqual(short.body.count, Self.imageSize / 2)
        XCTAssertEqual(short.body, image.prefix(Self.imageSize / 2))
    }

    func testWrongRangeShiftsContentRange() throws {
        proxy.inject(.wrongRange, count: 1)
        let shifted = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(shifted.exitCode, 0, shifted.stderr)
        XCTAssertEqual(shifted.header("Content-Range"), "bytes 1512-2511/\(Self.imageSize)")
        XCTAssertEqual(shifted.body, expectedRange)
    }

    func testStallTimesOutClient() throws {
        proxy.inject(.stall(seconds: 5), count: 1)
        let stalled = try CurlRun.run(["--max-time", "1", proxy.url("disk.img")])
        XCTAssertEqual(stalled.exitCode, 28, stalled.stderr)
        XCTAssertLessThan(stalled.elapsed, 2.5)
    }

    func testDropConnectionGivesEmptyReply() throws {
        proxy.inject(.dropConnection, count: 1)
        let dropped = try CurlRun.run([proxy.url("disk.img")])
        XCTAssertEqual(dropped.exitCode, 52, "expected CURLE_GOT_NOTHING: \(dropped.stderr)")
        XCTAssertEqual(proxy.faultsInjected, 1)
    }

    func testSlowBodyIsPacedButComplete() throws {
        proxy.inject(.slowBody(bytesPerSecond: 2000), count: 1)
        let slow = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(slow.exitCode, 0, slow.stderr)
        XCTAssertEqual(slow.body, expectedRange)
        XCTAssertGreaterThan(slow.elapsed, 0.4)
    }

    func testFaultForeverUntilCleared() throws {
        proxy.inject(.status(500), count: .max)
        for _ in 0..<3 {
            XCTAssertEqual(try CurlRun.run([proxy.url("disk.img")]).statusCodes, [500])
        }
        proxy.clearFaults()
        XCTAssertEqual(try CurlRun.run(["-r", "0-9", proxy.url("disk.img")]).statusCodes, [206])
        XCTAssertEqual(proxy.faultsInjected, 3)
    }

    func testKeepAliveConnectionIsReused() throws {
        let both = try CurlRun.run(["-v", "-r", "1000-1999", proxy.url("disk.img"), proxy.url("disk.img")])
        XCTAssertEqual(both.exitCode, 0, both.stderr)
        XCTAssertEqual(both.statusCodes, [206, 206])
        XCTAssertTrue(both.stderr.contains("Re-using existing connection"), both.stderr)
        XCTAssertEqual(both.body, expectedRange + expectedRange)
        XCTAssertEqual(proxy.requests, 2)
        XCTAssertEqual(proxy.connectionsAccepted, 1)
    }

    func testClientGivingUpMidBodyLeavesProxyServing() throws {
        proxy.inject(.slowBody(bytesPerSecond: 100_000), count: 1)
        let impatient = try CurlRun.run(["--max-time", "0.5", proxy.url("disk.img")])
        XCTAssertEqual(impatient.exitCode, 28, impatient.stderr)
        XCTAssertLessThan(impatient.body.count, Self.imageSize)
        let next = try CurlRun.run(["-r", "1000-1999", proxy.url("disk.img")])
        XCTAssertEqual(next.body, expectedRange)
    }

    func testDeinitReleasesProxyAndNginx() throws {
        let port = proxy.port
        let nginxPort = nginx.port
        let prefix = nginx.prefix
        let kept = try CurlRun.run(["-r", "0-9", proxy.url("disk.img")])
        XCTAssertEqual(kept.statusCodes, [206])
        proxy = nil
        nginx = nil
        XCTAssertFalse(LoopbackSocket.isAccepting(port: port))
        XCTAssertFalse(LoopbackSocket.isAccepting(port: nginxPort))
        XCTAssertFalse(FileManager.default.fileExists(atPath: prefix))
    }

    func testStopIsPromptWhileClientStalled() throws {
        proxy.inject(.stall(seconds: 60), count: .max)
        let client = try CurlRun(["--max-time", "30", proxy.url("disk.img")])
        let deadline = Date().addingTimeInterval(5)
        while proxy.requests == 0 && Date() < deadline { usleep(5_000) }
        XCTAssertEqual(proxy.requests, 1)
        let start = Date()
        proxy.stop()
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.0)
        let result = client.wait(timeout: 5)
        XCTAssertEqual(result.exitCode, 52, "the stalled client sees the connection close: \(result.stderr)")
        XCTAssertFalse(LoopbackSocket.isAccepting(port: proxy.port))
    }
}
