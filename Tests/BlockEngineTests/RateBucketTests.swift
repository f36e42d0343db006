import BlockEngine
import Dispatch
import Synchronization
import XCTest

/// The GCRA arithmetic (`RateMath`) and the shared limiter (`QoSLimiter`) on
/// a manual clock: rates, bursts, overflow safety and limits changed live.
final class RateBucketTests: XCTestCase {
    let tps = RateMath.ticksPerSecond
    let burstTicks = QoSLimiter.burstNanos * RateMath.ticksPerNanosecond

    func testCostIsUnitsAtTheRateInTicks() {
        XCTAssertEqual(RateMath.cost(units: 1, rate: 1000), tps / 1000)          // 1 ms
        XCTAssertEqual(RateMath.cost(units: 4096, rate: 1 << 20), 62_500_000)   // 3.90625 ms
        XCTAssertEqual(RateMath.cost(units: 1, rate: 3), 5_333_333_333)          // 1/3 s, rounded down
        XCTAssertEqual(RateMath.cost(units: 2, rate: 3), 10_666_666_667)         // 2/3 s, rounded up
        XCTAssertEqual(RateMath.cost(units: 1, rate: 0), 0, "rate 0 is unlimited")
        XCTAssertEqual(RateMath.cost(units: 0, rate: 5), 0)
    }

    func testCostSaturatesInsteadOfOverflowing() {
        XCTAssertEqual(RateMath.cost(units: .max, rate: 1), RateMath.maxCost)
        XCTAssertEqual(RateMath.cost(units: 1 << 40, rate: 1), RateMath.maxCost)
        XCTAssertEqual(RateMath.cost(units: .max, rate: .max), tps, "full-width product, exact quotient")
        XCTAssertEqual(RateMath.charged(tat: .max - 5, now: 0, cost: 10), .max)
        XCTAssertEqual(RateMath.charged(tat: 0, now: .max, cost: 1), .max)
        XCTAssertEqual(RateMath.wait(tat: .max, now: .max - 1, burst: .max), 0, "now + burst overflows: no wait")
    }

    func testWaitAndChargeFollowTheBurst() {
        let now: UInt64 = 1_000_000
        XCTAssertEqual(RateMath.wait(tat: now + 100, now: now, burst: 100), 0)
        XCTAssertEqual(RateMath.wait(tat: now + 101, now: now, burst: 100), 1)
        XCTAssertEqual(RateMath.charged(tat: 5, now: now, cost: 7), now + 7, "an idle bucket restarts at now")
        XCTAssertEqual(RateMath.charged(tat: now + 50, now: now, cost: 7), now + 57, "a busy one queues up")
    }

    /// A GCRA run for one simulated second: exactly rate x 1 s plus the burst start.
    func testSustainedRateIsExactInVirtualTime() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 1000), clock: clock)
        var started = 0
        // 10 us steps for one second, as many starts as admitted at each step.
        for _ in 0..<100_000 {
            while limiter.admit(write: false, bytes: 4096) == 0 { started += 1 }
            clock.advance(nanoseconds: 10_000)
        }
        // 51 at once (a 50 ms burst at 1 ms each, plus one), then one per ms.
        XCTAssertEqual(started, 51 + 1000 - 1)
    }

    func testAdmitAnswersTheWaitAndChargesNothingWhenRefused() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 1000), clock: clock)
        for _ in 0..<51 { XCTAssertEqual(limiter.admit(write: true, bytes: 512), 0) }
        XCTAssertEqual(limiter.admit(write: true, bytes: 512), 1_000_000, "next one in 1 ms")
        XCTAssertEqual(limiter.admit(write: true, bytes: 512), 1_000_000, "a refusal charges nothing")
        clock.advance(nanoseconds: 400_000)
        XCTAssertEqual(limiter.admit(write: true, bytes: 512), 600_000)
        clock.advance(nanoseconds: 600_000)
        XCTAssertEqual(limiter.admit(write: true, bytes: 512), 0)
    }

    func testBytesLimitCountsBytesAndALargeRequestLeavesADebt() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(bps: 1 << 20), clock: clock)
        // 4 MiB at 1 MiB/s: starts (the bucket is full), then the next waits ~4 s less the burst.
        XCTAssertEqual(limiter.admit(write: false, bytes: 4 << 20), 0)
        let wait = limiter.admit(write: false, bytes: 4096)
        XCTAssertEqual(wait, 4_000_000_000 - QoSLimiter.burstNanos)
        clock.advance(nanoseconds: wait)
        XCTAssertEqual(limiter.admit(write: false, bytes: 4096), 0)
        // Bytes over one virtual second: 1 MiB plus the burst (50 ms worth), within one request.
        let clock2 = QoSClock.manual()
        let l2 = try QoSLimiter(limits: QoSLimits(bps: 1 << 20), clock: clock2)
        var bytes: UInt64 = 0
        for _ in 0..<1000 {
            while l2.admit(write: true, bytes: 4096) == 0 { bytes += 4096 }
            clock2.advance(nanoseconds: 1_000_000)
        }
        let expected = Double(1 << 20) * 1.05
        XCTAssertEqual(Double(bytes), expected, accuracy: 4096)
    }

    func testReadAndWriteLimitsApplyToTheirOwnDirectionOnly() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(readIOPS: 100), clock: clock)
        for _ in 0..<10_000 { XCTAssertEqual(limiter.admit(write: true, bytes: 4096), 0, "writes are unlimited") }
        var reads = 0
        while limiter.admit(write: false, bytes: 4096) == 0 { reads += 1 }
        XCTAssertEqual(reads, 6, "50 ms burst at 10 ms each, plus one")
        // The total limit binds both.
        try limiter.set(QoSLimits(iops: 100, writeBPS: 1 << 30))
        var writes = 0
        while limiter.admit(write: true, bytes: 4096) == 0 { writes += 1 }
        XCTAssertEqual(writes, 6)
        XCTAssertGreaterThan(limiter.admit(write: false, bytes: 4096), 0, "reads share the total limit")
    }

    func testChangingLimitsTakesEffectAtOnce() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 10), clock: clock)
        XCTAssertEqual(limiter.admit(write: false, bytes: 512), 0)
        XCTAssertGreaterThan(limiter.admit(write: false, bytes: 512), 0, "at 10/s the next waits")
        // Raised: the old debt does not carry over.
        try limiter.set(QoSLimits(iops: 1000))
        var n = 0
        while limiter.admit(write: false, bytes: 512) == 0 { n += 1 }
        XCTAssertEqual(n, 51)
        // Lowered: from now on at the new rate.
        try limiter.set(QoSLimits(iops: 100))
        n = 0
        while limiter.admit(write: false, bytes: 512) == 0 { n += 1 }
        XCTAssertEqual(n, 6)
        // Removed: nothing waits.
        try limiter.set(.unlimited)
        for _ in 0..<100_000 { XCTAssertEqual(limiter.admit(write: false, bytes: 512), 0) }
        XCTAssertEqual(limiter.limits, .unlimited)
    }

    func testAnUnchangedLimitKeepsItsState() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 10, bps: 1 << 30), clock: clock)
        XCTAssertEqual(limiter.admit(write: false, bytes: 512), 0)
        XCTAssertGreaterThan(limiter.admit(write: false, bytes: 512), 0)
        // Changing another limit must not refill this one (a `set` of the same value is no reset).
        try limiter.set(QoSLimits(iops: 10, bps: 1 << 29))
        XCTAssertGreaterThan(limiter.admit(write: false, bytes: 512), 0)
    }

    func testHostileValuesAreRefusedWithTheOptionNamed() {
        XCTAssertThrowsError(try QoSLimiter(limits: QoSLimits(iops: QoSLimits.maxIOPS + 1))) { e in
            XCTAssertTrue("\(e)".contains("--limit-iops"), "\(e)")
        }
        XCTAssertThrowsError(try QoSLimiter(limits: QoSLimits(readBPS: 100))) { e in
            XCTAssertTrue("\(e)".contains("--limit-read-bps"), "\(e)")
        }
        XCTAssertThrowsError(try QoSLimiter(limits: QoSLimits(writeBPS: .max))) { e in
            XCTAssertTrue("\(e)".contains("--limit-write-bps"), "\(e)")
        }
        let limiter = QoSLimiter(clock: .manual())
        XCTAssertThrowsError(try limiter.set(QoSLimits(writeIOPS: .max)))
        XCTAssertEqual(limiter.limits, .unlimited, "a refused set changes nothing")
        XCTAssertNoThrow(try QoSLimits(iops: QoSLimits.maxIOPS, bps: QoSLimits.maxBPS, readBPS: QoSLimits.minBPS).validate())
    }

    /// Several threads admitting against one limiter: no start is lost or
    /// doubled, and the total stays at the limit (CAS, not a lock).
    func testConcurrentQueuesShareOneLimit() throws {
        let clock = QoSClock.manual()
        let limiter = try QoSLimiter(limits: QoSLimits(iops: 1000), clock: clock)
        let counter = StartCounter()
        for step in 0..<200 {
            DispatchQueue.concurrentPerform(iterations: 4) { t in
                while limiter.admit(write: t % 2 == 0, bytes: 4096) == 0 { counter.starts.add(1, ordering: .relaxed) }
            }
            if step < 199 { clock.advance(nanoseconds: 1_000_000) }
        }
        let total = counter.starts.load(ordering: .relaxed)
        // 51 at the start, one per ms after; each thread may pass the check
        // together with the others once (each start is still charged).
        XCTAssertGreaterThanOrEqual(total, 51 + 199)
        XCTAssertLessThanOrEqual(total, 51 + 199 + 3)
    }
}

/// Starts counted across threads.
final class StartCounter: Sendable {
    let starts = Atomic<Int>(0)
}
