import BlockBackends
@_spi(Fuzzing) import BlockEngine
import CMallocCounter
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// QoS in the engine: real queue workers and simulated drivers, the limiter
/// on a manual clock, so rates are checked by counting completions in
/// virtual time (never against the wall clock).
final class QoSEngineTests: XCTestCase {
    /// One queue served synchronously (memory backend: completions are
    /// ready within the pass), its driver and a limiter on a manual clock.
    final class Rig {
        let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 32 << 20)
        let driver: SimulatedDriver
        let builder: BlkRequestBuilder
        let sink = CountingInterruptSink(queues: 1)
        let clock = QoSClock.manual()
        let limiter: QoSLimiter
        let worker: QueueWorker<SimulatedGuestMemory>
        /// Heads of prebuilt 4 KiB requests, made available again as they complete.
        var heads: [UInt16] = []
        var completed = 0

        init(limits: QoSLimits, queueSize: UInt16 = 256, writes: Bool = false, threaded: Bool = false) throws {
            driver = SimulatedDriver(memory: memory, size: queueSize, eventIdx: true)
            builder = BlkRequestBuilder(driver: driver, indirect: true)
            limiter = try QoSLimiter(limits: limits, clock: clock)
            let parameters = BlkDeviceParameters(capacityBytes: 16 << 20, serial: "qos", numQueues: 1, queueSize: queueSize)
            var logger = Logger(label: "qos-test")
            logger.logLevel = .critical
            let backend = try MemoryBackendFactory(capacityBytes: 16 << 20)
            worker = try QueueWorker(
                config: QueueWorkerConfig(queueIndex: 0, addresses: driver.addresses, features: parameters.offeredFeatures,
                                          qos: limiter),
                memory: memory, backend: try backend.makeQueueBackend(queueIndex: 0, depth: Int(queueSize)),
                parameters: parameters, sink: sink, kickFD: driver.kickFD, logger: logger)
            // Every request is built once; the ring then cycles through them without allocating.
            for i in 0..<Int(queueSize) {
                let sector = UInt64(i % 64) * 8
                let r = writes ? builder.write(sector: sector, bytes: [UInt8](repeating: 0x5a, count: 4096))
                    : builder.read(sector: sector, length: 4096)
                heads.append(try XCTUnwrap(r).head)
            }
            if threaded { worker.start() } else { worker.openQueueSynchronously() }
        }

        /// One synchronous pass; returns how many requests came back, and makes them available again.
        @discardableResult
        func pass() -> Int {
            _ = worker.serviceOnceSynchronously()
            return recycle()
        }

        @discardableResult
        func recycle() -> Int {
            let n = driver.reapRecycled()
            completed += n
            // Resubmit in completion order is not needed: any head back is free again.
            if n > 0 {
                for i in 0..<n { driver.resubmit(head: heads[(completed - n + i) % heads.count]) }
                driver.publish()
                driver.kick()
            }
            return n
        }

        /// Serves `passes` passes, moving the clock `stepNanos` after each.
        func run(passes: Int, stepNanos: UInt64) {
            for _ in 0..<passes {
                pass()
                clock.advance(nanoseconds: stepNanos)
            }
        }
    }

    /// 1000 IOPS in virtual time: a 50 ms burst (51 requests), then exactly
    /// one per millisecond, whatever the driver keeps available.
    func testLimitedQueueCompletesAtTheIOPSLimit() throws {
        let rig = try Rig(limits: QoSLimits(iops: 1000))
        XCTAssertEqual(rig.pass(), 51, "the burst: 50 ms at 1 ms each, plus one")
        XCTAssertEqual(rig.pass(), 0, "held: nothing more without time passing")
        rig.clock.advance(nanoseconds: 10_000_000)
        XCTAssertEqual(rig.pass(), 10)
        // Two virtual seconds in 100 us steps: 2000 more, give or take the step.
        let before = rig.completed
        rig.run(passes: 20_000, stepNanos: 100_000)
        XCTAssertEqual(Double(rig.completed - before), 2000, accuracy: 1)
        // Every status is OK: held requests are delayed, never failed.
        XCTAssertEqual(rig.worker.control.needsReset, false)
    }

    func testLimitedQueueCompletesAtTheBytesLimit() throws {
        let rig = try Rig(limits: QoSLimits(writeBPS: 4 << 20), writes: true)
        rig.pass()
        let before = rig.completed
        rig.run(passes: 3000, stepNanos: 1_000_000)   // 3 virtual seconds
        let bytes = Double((rig.completed - before) * 4096)
        XCTAssertEqual(bytes, 3 * Double(4 << 20), accuracy: 4096 * 2)
    }

    func testReadLimitLeavesWritesAlone() throws {
        let rig = try Rig(limits: QoSLimits(readIOPS: 10, readBPS: 4096), writes: true)
        // 256 writes at once, and again: a read limit does not touch them.
        XCTAssertEqual(rig.pass(), 256)
        XCTAssertEqual(rig.pass(), 256)
    }

    func testUnlimitedDeviceIsUnaffected() throws {
        let rig = try Rig(limits: .unlimited)
        for _ in 0..<20 { XCTAssertEqual(rig.pass(), 256, "the whole ring every pass, with no time passing") }
    }

    /// Flush, GET_ID, discard and write-zeroes are not limited: they pass a
    /// limit that lets one read through per virtual second.
    func testFlushGetIDDiscardAreNotLimited() throws {
        let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 4 << 20)
        let driver = SimulatedDriver(memory: memory, size: 64, eventIdx: true)
        let builder = BlkRequestBuilder(driver: driver, indirect: true)
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 1, bps: 4096), clock: .manual())
        let p = BlkDeviceParameters(capacityBytes: 1 << 20, serial: "qos", numQueues: 1, queueSize: 64)
        let w = try QueueWorker(
            config: QueueWorkerConfig(queueIndex: 0, addresses: driver.addresses, features: p.offeredFeatures, qos: limiter),
            memory: memory, backend: try MemoryBackendFactory(capacityBytes: 1 << 20).makeQueueBackend(queueIndex: 0, depth: 64),
            parameters: p, sink: CountingInterruptSink(queues: 1), kickFD: driver.kickFD, logger: Logger(label: "qos"))
        w.openQueueSynchronously()
        var requests: [SimBlkRequest] = []
        for i in 0..<10 {
            requests.append(try XCTUnwrap(builder.bare(type: BlkRequestType.flush)))
            requests.append(try XCTUnwrap(builder.getID()))
            requests.append(try XCTUnwrap(builder.range(type: BlkRequestType.discard, sector: UInt64(i) * 8, sectors: 8)))
            requests.append(try XCTUnwrap(builder.range(type: BlkRequestType.writeZeroes, sector: UInt64(i) * 8, sectors: 8)))
        }
        _ = w.serviceOnceSynchronously()
        XCTAssertEqual(driver.collectUsed().count, 40)
        for r in requests { XCTAssertEqual(builder.statusByte(r), BlkStatus.ok) }
        // And a read after them is limited as usual: one starts, the next waits.
        let r1 = try XCTUnwrap(builder.read(sector: 0, length: 4096))
        let r2 = try XCTUnwrap(builder.read(sector: 8, length: 4096))
        _ = w.serviceOnceSynchronously()
        XCTAssertEqual(driver.collectUsed().map(\.head), [r1.head])
        XCTAssertEqual(builder.statusByte(r2), 0xff, "held, not failed")
        limiter.advanceClock(nanoseconds: 1_000_000_000)
        _ = w.serviceOnceSynchronously()
        XCTAssertEqual(driver.collectUsed().map(\.head), [r2.head])
        XCTAssertEqual(builder.statusByte(r2), BlkStatus.ok)
    }

    /// `set` applies at once: lowered, raised, removed.
    func testLimitsChangedLiveTakeEffectAtTheNextPass() throws {
        let rig = try Rig(limits: QoSLimits(iops: 1000))
        rig.run(passes: 100, stepNanos: 1_000_000)
        try rig.limiter.set(QoSLimits(iops: 100))
        let before = rig.completed
        rig.run(passes: 1000, stepNanos: 1_000_000)   // 1 virtual second at 100/s (+ the 50 ms burst)
        XCTAssertEqual(Double(rig.completed - before), 105, accuracy: 1)
        try rig.limiter.set(.unlimited)
        XCTAssertEqual(rig.pass(), 256, "unlimited again: the whole ring at once")
    }

    /// A stopping queue does not keep a request it consumed: the held one is
    /// started (and completes), the rest stay in the ring for the next daemon.
    func testStopFinishesTheHeldRequest() throws {
        let rig = try Rig(limits: QoSLimits(iops: 1000), threaded: true)
        rig.driver.kick(force: true)
        var got = 0
        for _ in 0..<5000 where got < 51 {
            got += rig.driver.reapRecycled()
            usleep(1000)
        }
        XCTAssertEqual(got, 51)
        // The thread sleeps with the 52nd held (the manual clock does not move).
        let avail = rig.worker.control.stop()
        got += rig.driver.reapRecycled()
        XCTAssertEqual(got, 52, "the held request completed on stop")
        XCTAssertEqual(avail, 52, "nothing consumed is left behind")
    }

    /// The threaded worker sleeps while held and follows the clock and `set`.
    func testThreadedWorkerWakesForTimeAndForNewLimits() throws {
        let rig = try Rig(limits: QoSLimits(iops: 1000), threaded: true)
        defer { rig.worker.control.stop() }
        rig.driver.kick(force: true)
        func waitFor(_ n: Int) -> Int {
            for _ in 0..<5000 where rig.completed < n {
                _ = rig.recycle()
                if rig.completed < n { usleep(1000) }
            }
            return rig.completed
        }
        XCTAssertEqual(waitFor(51), 51)
        rig.limiter.advanceClock(nanoseconds: 20_000_000)
        XCTAssertEqual(waitFor(71), 71)
        try rig.limiter.set(.unlimited)
        XCTAssertGreaterThanOrEqual(waitFor(2000), 2000, "unlimited: the worker runs freely again")
    }

    /// 0 heap allocations per request with a limit that holds requests back
    /// (malloc is counted by CMallocCounter, only inside the worker's passes).
    /// Optimized builds only: unoptimized Swift allocates where -O does not
    /// (run `swift test -c release -Xswiftc -enable-testing --filter QoSEngineTests`).
    func testNoAllocationPerRequestWithALimit() throws {
        try XCTSkipIf(vb_malloc_counting() == 0, "a sanitizer owns malloc: allocations are not counted")
        if Self.unoptimized {
            throw XCTSkip("allocation counts need an optimized build: swift test -c release -Xswiftc -enable-testing --filter QoSEngineTests")
        }
        // The counter sees an allocation made where the passes are measured.
        let c0 = vb_malloc_count()
        UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8).deallocate()
        XCTAssertGreaterThan(vb_malloc_count(), c0, "the malloc counter is not interposed")
        // 4 KiB reads at 200 MiB/s: about 5 per 100 us pass, far below the 256 the ring offers.
        let rig = try Rig(limits: QoSLimits(iops: 100_000, readBPS: 200 << 20))
        rig.run(passes: 200, stepNanos: 100_000)   // warm up
        var allocations: UInt64 = 0
        let before = rig.completed
        var throttledPasses = 0
        for _ in 0..<5000 {
            let a0 = vb_malloc_count()
            _ = rig.worker.serviceOnceSynchronously()
            allocations += vb_malloc_count() - a0
            if rig.recycle() < 256 { throttledPasses += 1 }
            rig.clock.advance(nanoseconds: 100_000)
        }
        let moved = rig.completed - before
        // 0.5 virtual seconds at 51200 requests/s, within a request or two.
        XCTAssertEqual(Double(moved), 25600, accuracy: 2, "requests moved at the limit")
        XCTAssertEqual(throttledPasses, 5000, "the limit held requests back in every pass")
        XCTAssertEqual(allocations, 0, "allocations in \(moved) requests")
    }

    #if DEBUG
    static let unoptimized = true
    #else
    static let unoptimized = false
    #endif
}
