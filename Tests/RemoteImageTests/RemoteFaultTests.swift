import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc
import Logging
@_spi(Fuzzing) @testable import RemoteImage
import TestSupport
import XCTest

/// The remote backend behind a fault-injecting proxy in front of a real
/// nginx: 5xx, dropped connections, truncated bodies, wrong ranges and
/// stalls are retried and never cached; a fault that outlasts the deadline
/// becomes IOERR; an object replaced under a running device is detected.
/// Every read that succeeds returns the source bytes exactly.
final class RemoteFaultTests: XCTestCase {
    var root = ""
    var cacheDir = ""
    var dirs: [TempDir] = []
    var nginx: NginxFixture!
    var proxy: FaultProxy!
    static let imageSize = 4 << 20
    var image: [UInt8] = []

    override func setUpWithError() throws {
        dirs = [try TempDir(label: "www"), try TempDir(label: "cache")]
        root = dirs[0].path
        cacheDir = dirs[1].path
        image = randomBytes(Self.imageSize, seed: 11)
        try writeFile("\(root)/disk.img", image)
        nginx = try NginxFixture(root: root)
        proxy = try FaultProxy(upstream: nginx)
    }

    override func tearDown() {
        proxy?.stop()
        nginx?.stop()
        dirs = []
    }

    func open(_ extra: [String] = []) throws -> RemoteBackendFactory {
        let o = try RemoteOptions.parse(url: proxy.url("disk.img"),
                                        options: ["chunk=256K", "cache-dir=\(cacheDir)", "format=raw", "readahead=0"] + extra)
        return try RemoteBackendFactory(options: o, logger: Logger(label: "test"))
    }

    func stat(_ f: RemoteBackendFactory, _ name: String) -> UInt64 {
        f.statistics()?.first { $0.0 == name }?.1 ?? .max
    }

    /// Reads chunk `chunk` whole through a fresh queue and checks the bytes.
    func assertChunkReads(_ f: RemoteBackendFactory, _ q: QueueDriver, chunk: Int, line: UInt = #line) {
        let offset = chunk * (256 << 10)
        let (rc, bytes) = q.read(UInt64(offset), 256 << 10)
        XCTAssertEqual(rc, 256 << 10, line: line)
        XCTAssertTrue(bytes == Array(image[offset..<offset + (256 << 10)]), "chunk \(chunk) differs from the source", line: line)
    }

    func testTransientFaultsAreRetriedAndNeverCached() throws {
        let f = try open()
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        let faults: [FaultProxy.Fault] = [.status(503), .status(500), .dropConnection, .truncate, .wrongRange, .status(429)]
        for (i, fault) in faults.enumerated() {
            proxy.inject(fault, count: 2)
            assertChunkReads(f, q, chunk: i)
        }
        // At least one retry of ours per fault (curl itself silently retries a request whose reused connection was dropped).
        XCTAssertGreaterThanOrEqual(stat(f, "fetch_retries"), UInt64(faults.count))
        XCTAssertEqual(stat(f, "fetch_failures"), 0)
        XCTAssertEqual(stat(f, "chunks_fetched"), UInt64(faults.count))
    }

    func testStalledResponseIsAbandonedAndRetried() throws {
        let f = try open(["stall=1", "timeout=20"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        proxy.inject(.stall(seconds: 8), count: 1)
        let started = monotonicSeconds()
        assertChunkReads(f, q, chunk: 3)
        XCTAssertLessThan(monotonicSeconds() - started, 7, "the stalled attempt was not abandoned")
        XCTAssertGreaterThanOrEqual(stat(f, "fetch_retries"), 1)
    }

    func testFaultOutlastingTheDeadlineIsIOErrorAndNotSticky() throws {
        let f = try open(["timeout=2", "attempts=50"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        proxy.inject(.status(503), count: Int.max)
        let started = monotonicSeconds()
        XCTAssertEqual(q.read(0, 4096).0, -EIO)
        XCTAssertLessThan(monotonicSeconds() - started, 10)
        XCTAssertGreaterThanOrEqual(stat(f, "fetch_failures"), 1)
        proxy.clearFaults()
        assertChunkReads(f, q, chunk: 0)
    }

    func testPermanentErrorsFailWithoutRetrying() throws {
        let f = try open(["timeout=20"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        proxy.inject(.status(403), count: 1)
        let started = monotonicSeconds()
        XCTAssertEqual(q.read(0, 4096).0, -EIO)
        XCTAssertLessThan(monotonicSeconds() - started, 2, "a 403 must not be retried for the whole deadline")
        XCTAssertEqual(stat(f, "fetch_retries"), 0)
        assertChunkReads(f, q, chunk: 0)
    }

    /// The object's size comes from the probe's `Content-Range` total: a server
    /// claiming more than 2^24 chunks (or a total that is no number) fails
    /// `create` with a clear message before anything is sized by it.
    func testAbsurdObjectSizeFromTheServerFailsOpen() throws {
        proxy.inject(.claimTotal("4611686018427387904"), count: 1)       // 2^62 bytes
        XCTAssertThrowsError(try open()) { e in
            XCTAssertTrue("\(e)".contains("claims 4611686018427387904 bytes"), "\(e)")
        }
        proxy.inject(.claimTotal("18446744073709551616"), count: 8)      // 2^64: not a UInt64
        XCTAssertThrowsError(try open(["attempts=2", "timeout=3"])) { e in
            XCTAssertTrue("\(e)".contains("without a usable Content-Range"), "\(e)")
        }
        proxy.clearFaults()
        // The honest object behind the same proxy still opens and reads.
        let f = try open()
        defer { f.shutdown() }
        assertChunkReads(f, QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16)), chunk: 3)
    }

    func testObjectReplacedUnderARunningDeviceFailsMissesInsteadOfMixingVersions() throws {
        let f = try open()
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        assertChunkReads(f, q, chunk: 0)
        usleep(1_100_000)
        try writeFile("\(root)/disk.img", randomBytes(Self.imageSize, seed: 12))
        XCTAssertEqual(q.read(UInt64(5 * (256 << 10)), 4096).0, -EIO)
        // Later misses fail at once too (nothing is fetched any more), never hang.
        let started = monotonicSeconds()
        XCTAssertEqual(q.read(UInt64(9 * (256 << 10)), 4096, timeout: 5).0, -EIO)
        XCTAssertLessThan(monotonicSeconds() - started, 1)
        // What was cached before the change is still the old object's, consistently.
        assertChunkReads(f, q, chunk: 0)
    }
}
