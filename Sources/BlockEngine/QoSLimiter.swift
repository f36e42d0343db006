import Glibc
import Synchronization
import SystemSupport

/// A device's QoS limits as every queue applies them: six `RateBucket`s
/// (IOPS and bytes/s for reads, writes and both) shared by all the device's
/// queues, so a limit holds for the device whatever the spread of the load
/// over the queues (per-queue buckets would split it N ways and cap a guest
/// that uses one queue at limit/N). A queue thread admits a request with a
/// few atomic loads and, when it starts, one compare-and-swap per bucket
/// that applies: no lock, no allocation; an unlimited device pays one relaxed
/// load. Owns the buckets, the clock they run on and the list of queue
/// workers to wake when the limits change (taken under a lock on the control
/// path only: when a worker starts or stops and when the limits are set).
public final class QoSLimiter: Sendable {
    /// How much a bucket may run ahead of its rate (a burst): 50 ms at the
    /// limit. Also what keeps the rate exact when a throttled queue thread
    /// wakes late (poll's millisecond timeout, scheduling): tokens it could
    /// not use then are still there, as long as it is less late than this.
    public static let burstNanos: UInt64 = 50_000_000

    let iops = RateBucket()
    let readIOPS = RateBucket()
    let writeIOPS = RateBucket()
    let bps = RateBucket()
    let readBPS = RateBucket()
    let writeBPS = RateBucket()
    /// One bit per bucket with a limit (see `Bit`): 0 means no request waits for anything.
    let active = Atomic<UInt8>(0)
    let burst: UInt64 = QoSLimiter.burstNanos * RateMath.ticksPerNanosecond
    let clock: QoSClock
    /// The workers to wake when the limits change (keyed by their control's identity).
    let workers = Guarded<[ObjectIdentifier: WorkerControl]>([:])
    /// Serializes `set` (control path).
    let setting = Guarded<QoSLimits>(.unlimited)

    enum Bit {
        static let iops: UInt8 = 1, readIOPS: UInt8 = 2, writeIOPS: UInt8 = 4
        static let bps: UInt8 = 8, readBPS: UInt8 = 16, writeBPS: UInt8 = 32
        static let read = iops | readIOPS | bps | readBPS
        static let write = iops | writeIOPS | bps | writeBPS
    }

    /// An unlimited limiter on `clock` (the monotonic clock unless a test drives a manual one).
    public init(clock: QoSClock = .monotonic()) {
        self.clock = clock
    }

    /// A limiter with `limits` (checked: see `QoSLimits.validate`).
    public convenience init(limits: QoSLimits, clock: QoSClock = .monotonic()) throws(QoSError) {
        self.init(clock: clock)
        try set(limits)
    }

    /// The limits in force.
    public var limits: QoSLimits { setting.withLock { $0 } }

    /// Applies new limits at once: a bucket whose rate changes starts again
    /// full at its new rate, and every worker is woken so that a request held
    /// back under the old limits is looked at again now.
    public func set(_ limits: QoSLimits) throws(QoSError) {
        try limits.validate()
        setting.withLock { current in
            let now = clock.now()
            var mask: UInt8 = 0
            func apply(_ bucket: borrowing RateBucket, _ new: UInt64, _ old: UInt64, _ bit: UInt8) {
                if new != old || bucket.currentRate != new { bucket.set(rate: new, now: now) }
                if new != 0 { mask |= bit }
            }
            apply(iops, limits.iops, current.iops, Bit.iops)
            apply(readIOPS, limits.readIOPS, current.readIOPS, Bit.readIOPS)
            apply(writeIOPS, limits.writeIOPS, current.writeIOPS, Bit.writeIOPS)
            apply(bps, limits.bps, current.bps, Bit.bps)
            apply(readBPS, limits.readBPS, current.readBPS, Bit.readBPS)
            apply(writeBPS, limits.writeBPS, current.writeBPS, Bit.writeBPS)
            active.store(mask, ordering: .releasing)
            current = limits
        }
        wakeWorkers()
    }

    /// True when any limit is set (a relaxed load: the queue's fast path).
    @inline(__always)
    public var isActive: Bool { active.load(ordering: .relaxed) != 0 }

    /// Decides for a read or write of `bytes` about to start: 0 when it may
    /// start now (and it is charged to every bucket that applies), else the
    /// nanoseconds to wait before asking again (nothing charged). Queue
    /// threads call this per request; it never blocks.
    @inline(__always)
    public func admit(write: Bool, bytes: UInt64) -> UInt64 {
        let mask = active.load(ordering: .relaxed) & (write ? Bit.write : Bit.read)
        if mask == 0 { return 0 }
        let now = clock.now()
        var wait = max(iops.wait(now: now, burst: burst), bps.wait(now: now, burst: burst))
        if write {
            wait = max(wait, writeIOPS.wait(now: now, burst: burst), writeBPS.wait(now: now, burst: burst))
        } else {
            wait = max(wait, readIOPS.wait(now: now, burst: burst), readBPS.wait(now: now, burst: burst))
        }
        if wait > 0 { return (wait + RateMath.ticksPerNanosecond - 1) / RateMath.ticksPerNanosecond }
        charge(write: write, bytes: bytes, now: now)
        return 0
    }

    /// Charges a request that starts regardless of the limits (one a pausing
    /// queue must finish first): later requests wait for it.
    public func force(write: Bool, bytes: UInt64) {
        let mask = active.load(ordering: .relaxed) & (write ? Bit.write : Bit.read)
        if mask == 0 { return }
        charge(write: write, bytes: bytes, now: clock.now())
    }

    @inline(__always)
    func charge(write: Bool, bytes: UInt64, now: UInt64) {
        iops.charge(units: 1, now: now)
        bps.charge(units: bytes, now: now)
        if write {
            writeIOPS.charge(units: 1, now: now)
            writeBPS.charge(units: bytes, now: now)
        } else {
            readIOPS.charge(units: 1, now: now)
            readBPS.charge(units: bytes, now: now)
        }
    }

    // MARK: - the workers to wake

    /// A worker registers when it is made, so `set` can wake it.
    func attach(_ control: WorkerControl) {
        workers.withLock { $0[ObjectIdentifier(control)] = control }
    }

    /// A worker leaves when its thread ends.
    func detach(_ control: WorkerControl) {
        _ = workers.withLock { $0.removeValue(forKey: ObjectIdentifier(control)) }
    }

    /// Wakes every registered worker (its wake eventfd): limits changed, or a manual clock moved.
    public func wakeWorkers() {
        for w in workers.withLock({ Array($0.values) }) { w.wake() }
    }

    /// Moves a manual clock on and wakes the workers (tests); no effect on the monotonic clock.
    public func advanceClock(nanoseconds: UInt64) {
        clock.advance(nanoseconds: nanoseconds)
        wakeWorkers()
    }
}

/// The clock a `QoSLimiter` runs on, in `RateMath` ticks: the monotonic
/// clock (ticks since the clock was made), or a manual one tests move by hand
/// so that rates are checked in virtual time. Owns the manual time.
public final class QoSClock: Sendable {
    let manual: Bool
    let manualTicks = Atomic<UInt64>(0)
    let epochNanos: UInt64

    init(manual: Bool) {
        self.manual = manual
        epochNanos = manual ? 0 : Self.monotonicNanos()
    }

    /// The monotonic clock.
    public static func monotonic() -> QoSClock { QoSClock(manual: false) }
    /// A clock that stands still until `advance` moves it (starts at 1 s).
    public static func manual() -> QoSClock {
        let c = QoSClock(manual: true)
        c.manualTicks.store(RateMath.ticksPerSecond, ordering: .relaxed)
        return c
    }

    /// Ticks now.
    @inline(__always)
    func now() -> UInt64 {
        if manual { return manualTicks.load(ordering: .acquiring) }
        let ns = Self.monotonicNanos() &- epochNanos
        return ns.multipliedReportingOverflow(by: RateMath.ticksPerNanosecond).partialValue
    }

    /// Moves a manual clock on (no effect on the monotonic one).
    public func advance(nanoseconds: UInt64) {
        guard manual else { return }
        manualTicks.wrappingAdd(nanoseconds &* RateMath.ticksPerNanosecond, ordering: .releasing)
    }

    @inline(__always)
    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
