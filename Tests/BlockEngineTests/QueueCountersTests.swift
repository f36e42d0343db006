import BlockBackends
@testable import BlockEngine
import Glibc
import Logging
import SystemSupport
import TestSupport
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// The per-queue counters and the service-time histogram, through real
/// workers and simulated drivers.
final class QueueCountersTests: XCTestCase {
    func count(_ s: QueueCountersSnapshot, _ k: RequestKind) -> UInt64 { s.requests[k.rawValue] }

    func testEveryRequestTypeIsCountedWithItsBytesAndServiceTime() throws {
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 8 << 20))
        defer { h.stop() }
        let data = pattern(8192, seed: 9)
        for _ in 0..<3 { XCTAssertEqual(h.run { $0.write(sector: 16, bytes: data, segments: 2) }.status, BlkStatus.ok) }
        for _ in 0..<2 { XCTAssertEqual(h.run { $0.read(sector: 16, length: 4096) }.status, BlkStatus.ok) }
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.getID() }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.discard, sector: 0, sectors: 8) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.writeZeroes, sector: 8, sectors: 8) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.bare(type: 0xdead_beef) }.status, BlkStatus.unsupported)
        // Past the end: refused by the parser, no backend work, no backend failure.
        XCTAssertEqual(h.run { $0.read(sector: (8 << 20) / 512, length: 512) }.status, BlkStatus.ioError)

        let s = h.workers[0].counters.snapshot()
        XCTAssertEqual(count(s, .write), 3)
        XCTAssertEqual(count(s, .read), 2)
        XCTAssertEqual(count(s, .flush), 1)
        XCTAssertEqual(count(s, .getID), 1)
        XCTAssertEqual(count(s, .discard), 1)
        XCTAssertEqual(count(s, .writeZeroes), 1)
        XCTAssertEqual(count(s, .unsupported), 1)
        XCTAssertEqual(count(s, .refused), 1)
        XCTAssertEqual(s.bytesWritten, 3 * 8192)
        XCTAssertEqual(s.bytesRead, 2 * 4096)
        XCTAssertEqual(s.failed, 0)
        XCTAssertNil(s.lastFailureKind)
        XCTAssertEqual(s.inFlight, 0)
        XCTAssertEqual(s.completed, 11)
        XCTAssertEqual(s.histogramCount, s.completed, "every completed request is in the histogram once")
        XCTAssertEqual(h.workers[0].completedRequests, 11)
        XCTAssertFalse(s.broken)
    }

    func testHistogramBucketsArePowersOfTwoMicroseconds() {
        let c = QueueCounters(queueIndex: 3)
        // (service ns, bucket): bucket i holds (1000 * 2^(i-1), 1000 * 2^i], bucket 0 up to 1 µs.
        let cases: [(UInt64, Int)] = [(0, 0), (1, 0), (1000, 0), (1001, 1), (2000, 1), (2001, 2), (4000, 2),
                                      (1_000_000, 10), (1_024_000, 10), (1_024_001, 11),
                                      (1_048_576_000, 20), (1_048_576_001, 21), (50_000_000_000, 21)]
        for (ns, _) in cases { c.recordCompletion(.read, nanos: ns) }
        let s = c.snapshot()
        var expected = [UInt64](repeating: 0, count: QueueCounters.bucketBoundsNanos.count + 1)
        for (_, b) in cases { expected[b] += 1 }
        XCTAssertEqual(s.buckets, expected)
        XCTAssertEqual(s.serviceNanos, cases.reduce(0) { $0 + $1.0 })
        XCTAssertEqual(s.overflowNanos, 1_048_576_001 + 50_000_000_000)
        XCTAssertEqual(QueueCounters.bucketBoundsNanos.first, 1000)
        XCTAssertEqual(QueueCounters.bucketBoundsNanos.last, 1_048_576_000)
        XCTAssertEqual(c.queueIndex, 3)
    }

    func testServiceTimeCoversTheBackendsTime() throws {
        // A file on io_uring with O_DSYNC-free writes still takes microseconds, never 0:
        // the histogram's sum grows with real time spent in the backend.
        let dir = try TempDir()
        let f = try FileBackendFactory(path: dir.path + "/img", size: 4 << 20, engine: .uring)
        let h = try EngineHarness(backend: f)
        defer { h.stop() }
        let t0 = monotonicSeconds()
        for i in 0..<20 { XCTAssertEqual(h.run { $0.write(sector: UInt64(i * 8), bytes: pattern(4096, seed: UInt8(i))) }.status, 0) }
        let wall = monotonicSeconds() - t0
        let s = h.workers[0].counters.snapshot()
        XCTAssertEqual(s.histogramCount, 20)
        XCTAssertGreaterThan(s.serviceNanos, 0)
        XCTAssertLessThanOrEqual(Double(s.serviceNanos) / 1e9, wall, "service time is inside the wall time the driver waited")
    }

    func testBackendFailuresAreCountedWithTheLastErrnoAndReportedOncePerCall() throws {
        let h = try EngineHarness(backend: FaultyBackendFactory(failures: [.write: -ENOSPC, .flush: -EIO]))
        defer { h.stop() }
        for _ in 0..<4 { XCTAssertEqual(h.run { $0.write(sector: 0, bytes: pattern(512, seed: 1)) }.status, BlkStatus.ioError) }
        XCTAssertEqual(h.run { $0.read(sector: 0, length: 512) }.status, BlkStatus.ok)
        let capture = LogCapture()
        let logger = Logger(label: "test") { _ in capture }
        let reporter = QueueFailureReporter(device: "dev0", queues: h.workers.map(\.counters), logger: logger)
        // Created after the failures: they were reported by whoever came before.
        XCTAssertEqual(reporter.report(), [])
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ioError)
        for _ in 0..<3 { XCTAssertEqual(h.run { $0.write(sector: 8, bytes: pattern(1024, seed: 2)) }.status, BlkStatus.ioError) }

        let s = h.workers[0].counters.snapshot()
        XCTAssertEqual(s.failures[RequestKind.write.rawValue], 7)
        XCTAssertEqual(s.failures[RequestKind.flush.rawValue], 1)
        XCTAssertEqual(s.failed, 8)
        XCTAssertEqual(s.lastFailureKind, .write)
        XCTAssertEqual(s.lastFailureResult, Int64(-ENOSPC))
        XCTAssertEqual(s.bytesWritten, 0, "failed writes move no bytes")
        XCTAssertEqual(s.bytesRead, 512)
        XCTAssertEqual(s.completed, 9)

        let lines = reporter.report()
        XCTAssertEqual(lines.count, 1, "one line per queue per report, however many failures")
        XCTAssertEqual(capture.lines.count, 1)
        XCTAssertEqual(capture.levels, [.warning])
        let line = capture.lines.first ?? ""
        for part in ["device dev0", "queue 0", "4 request(s)", "write 3", "flush 1", "last: write", "No space left on device", "errno \(ENOSPC)"] {
            XCTAssertTrue(line.contains(part), "\(part) in \(line)")
        }
        // Nothing new: nothing logged.
        XCTAssertEqual(reporter.report(), [])
        XCTAssertEqual(capture.lines.count, 1)
    }

    func testCountersOutliveAWorkerAndKeepCounting() throws {
        let factory = try MemoryBackendFactory(capacityBytes: 1 << 20)
        let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 8 << 20)
        let counters = QueueCounters(queueIndex: 0)
        let sink = CountingInterruptSink(queues: 1)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let params = BlkDeviceParameters(capacityBytes: 1 << 20, serial: "s", numQueues: 1, queueSize: 16)
        for round in 1...2 {
            let driver = SimulatedDriver(memory: memory, size: 16, eventIdx: true)
            let builder = BlkRequestBuilder(driver: driver)
            let w = try QueueWorker(config: QueueWorkerConfig(queueIndex: 0, addresses: driver.addresses,
                                                              features: params.offeredFeatures, counters: counters),
                                    memory: memory, backend: try factory.makeQueueBackend(queueIndex: 0, depth: 16),
                                    parameters: params, sink: sink, kickFD: driver.kickFD, logger: logger)
            XCTAssertTrue(w.counters === counters)
            w.start()
            for _ in 0..<5 { _ = builder.read(sector: 0, length: 512) }
            driver.kick(force: true)
            XCTAssertEqual(driver.waitUsed(count: 5, timeoutMs: 5000).count, 5)
            w.control.stop()
            XCTAssertEqual(counters.snapshot().requests[RequestKind.read.rawValue], UInt64(5 * round))
        }
    }
}
