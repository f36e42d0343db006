import BlockBackends
import Glibc
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// Several queues at once on one file, and the notification-suppression rules.
final class MultiQueueAndNotificationTests: XCTestCase {
    func testFourQueuesWriteAndReadBackConcurrently() throws {
        try fourQueuesWriteAndReadBack(ringWait: false)
    }

    func testFourQueuesWriteAndReadBackConcurrentlyWaitingInTheRing() throws {
        try fourQueuesWriteAndReadBack(ringWait: true)
    }

    func fourQueuesWriteAndReadBack(ringWait: Bool) throws {
        var t = Array("/tmp/vduse-blk-mq.XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&t))
        defer { _ = system("rm -rf '\(dir)'") }
        let backend = try FileBackendFactory(path: "\(dir)/mq.img", size: 16 << 20, engine: .uring)
        let h = try EngineHarness(backend: backend, queues: 4, queueSize: 64, ringWait: ringWait)
        defer { h.stop() }
        // Each queue writes 32 x 16 KiB to its own quarter, all in flight at once.
        let perQueue = 16, chunk = 16 << 10
        var written: [[SimBlkRequest]] = []
        for q in 0..<4 {
            var reqs: [SimBlkRequest] = []
            for i in 0..<perQueue {
                let sector = UInt64(q * (4 << 20) + i * chunk) / 512
                reqs.append(h.builders[q].write(sector: sector, bytes: pattern(chunk, seed: UInt8(q * 40 + i)),
                                                segments: 2)!)
            }
            written.append(reqs)
        }
        for q in 0..<4 { h.drivers[q].kick(force: true) }
        for q in 0..<4 {
            let used = h.drivers[q].waitUsed(count: perQueue)
            XCTAssertEqual(used.count, perQueue, "queue \(q)")
            XCTAssertEqual(Set(used.map(\.head)), Set(written[q].map(\.head)))
            for r in written[q] { XCTAssertEqual(h.builders[q].statusByte(r), BlkStatus.ok) }
        }
        // Read everything back through a different queue than wrote it.
        for q in 0..<4 {
            let reader = (q + 1) % 4
            for i in 0..<perQueue {
                let sector = UInt64(q * (4 << 20) + i * chunk) / 512
                let r = h.run(reader) { $0.read(sector: sector, length: UInt32(chunk), segments: 4) }
                XCTAssertEqual(r.status, BlkStatus.ok)
                XCTAssertEqual(h.builders[reader].data(r.request!), pattern(chunk, seed: UInt8(q * 40 + i)))
            }
        }
        for q in 0..<4 { XCTAssertGreaterThan(h.sink.count(queue: q), 0) }
    }

    func testEventIdxSuppressesInterruptsUntilUsedEvent() throws {
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16)
        defer { h.stop() }
        let d = h.drivers[0]
        // First completion always interrupts (nothing signalled yet).
        _ = h.run { $0.bare(type: BlkRequestType.flush) }
        XCTAssertTrue(h.sink.wait(queue: 0, timeoutMs: 2000))
        let base = h.sink.count(queue: 0)
        // Ask for an interrupt only once used idx passes lastUsed + 3.
        d.requestInterrupt(afterUsed: 3)
        for i in 0..<3 {
            _ = h.run { $0.bare(type: BlkRequestType.flush) }
            XCTAssertEqual(h.sink.count(queue: 0), base, "interrupt after completion \(i + 1)")
        }
        _ = h.run { $0.bare(type: BlkRequestType.flush) }
        XCTAssertTrue(h.sink.wait(queue: 0, timeoutMs: 2000))
        XCTAssertEqual(h.sink.count(queue: 0), base + 1)
    }

    func testEventIdxDeviceAsksForKicksOnlyWhenIdle() throws {
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16)
        defer { h.stop() }
        let d = h.drivers[0]
        // An idle device has set avail_event to its next avail index: the kick is wanted.
        usleep(50_000) // let the worker thread reach its first sleep
        for _ in 0..<3 {
            _ = h.builders[0].bare(type: BlkRequestType.flush)
            usleep(20_000)
            let avail = d.memory.pointer(d.addresses.usedRing + 4 + 8 * 16).load(as: UInt16.self)
            XCTAssertTrue(d.kick(), "an idle device must want the kick (avail_event \(avail) used \(d.usedIndex) kicks \(d.kicks))")
            XCTAssertEqual(d.waitUsed(count: 1).count, 1)
        }
        XCTAssertEqual(d.suppressedKicks, 0)
    }

    func testNoInterruptFlagWithoutEventIdx() throws {
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16,
                                  eventIdx: false)
        defer { h.stop() }
        h.drivers[0].requestInterrupt(suppress: true)
        for _ in 0..<3 { XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok) }
        XCTAssertEqual(h.sink.count(queue: 0), 0)
        h.drivers[0].requestInterrupt(suppress: false)
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
        XCTAssertTrue(h.sink.wait(queue: 0, timeoutMs: 2000))
    }

    func testPauseResumeAndStopReportAvailIndex() throws {
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16)
        for _ in 0..<5 { XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok) }
        let w = h.workers[0]
        w.control.pause()
        // While paused, new work is not consumed.
        _ = h.builders[0].bare(type: BlkRequestType.flush)
        h.drivers[0].kick(force: true)
        usleep(50_000)
        XCTAssertEqual(h.drivers[0].collectUsed().count, 0)
        w.control.resume()
        XCTAssertEqual(h.drivers[0].waitUsed(count: 1).count, 1)
        XCTAssertEqual(w.control.stop(), 6)
    }

    /// `stop()` joins the queue thread: once it returns, the thread no longer
    /// holds its worker (with a detached thread the last release, and the
    /// worker's teardown, could come later on a thread nobody waits for).
    func testStopReturnsOnlyOnceTheQueueThreadHasLetGo() throws {
        for round in 0..<20 {
            let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16)
            XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
            weak let worker = h.workers[0]
            h.stop()
            h.workers.removeAll()
            XCTAssertNil(worker, "round \(round): the queue thread still held its worker after stop()")
        }
    }
}
