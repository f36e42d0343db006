import Synchronization

/// The arithmetic of one rate limit as a GCRA (generic cell rate algorithm,
/// the token bucket written as one number): the "theoretical arrival time"
/// `tat` is when the bucket would be empty again. A request may start when
/// `tat <= now + burst`; starting it moves `tat` to `max(tat, now) + cost`,
/// where `cost` is its units (1 request, or its bytes) at the limit's rate.
/// A request larger than the burst still starts once the bucket is below the
/// burst (it leaves a debt the next ones wait for), so nothing ever waits
/// forever, and over any period P at most `rate * (P + burst) + one request`
/// start. Times are ticks of 1/16 ns (`ticksPerSecond`), so rounding one
/// cost to a tick is negligible even at 10 million requests per second;
/// every operation saturates instead of overflowing (2^64 ticks are 36 years).
public enum RateMath {
    /// Ticks per second (1/16 ns each).
    public static let ticksPerSecond: UInt64 = 16_000_000_000
    public static let ticksPerNanosecond: UInt64 = 16
    /// A cost never exceeds this (about 9 years), so `tat` plus one cost cannot overflow in practice.
    public static let maxCost: UInt64 = 1 << 62

    /// Ticks `units` take at `rate` units per second (0 when `rate` is 0: unlimited), rounded to nearest.
    @inlinable
    public static func cost(units: UInt64, rate: UInt64) -> UInt64 {
        if rate == 0 || units == 0 { return 0 }
        let product = units.multipliedFullWidth(by: ticksPerSecond)
        // The quotient fits in 64 bits only when high < rate.
        if product.high >= rate { return maxCost }
        let (q, r) = rate.dividingFullWidth(product)
        let rounded = r >= rate - r ? q + 1 : q   // r >= rate/2 without overflow
        return min(rounded, maxCost)
    }

    /// Ticks until a request may start (0: it may start now).
    @inlinable
    public static func wait(tat: UInt64, now: UInt64, burst: UInt64) -> UInt64 {
        let (limit, overflow) = now.addingReportingOverflow(burst)
        if overflow || tat <= limit { return 0 }
        return tat - limit
    }

    /// The bucket's `tat` after a request of `cost` starts at `now`.
    @inlinable
    public static func charged(tat: UInt64, now: UInt64, cost: UInt64) -> UInt64 {
        let (t, overflow) = max(tat, now).addingReportingOverflow(cost)
        return overflow ? UInt64.max : t
    }
}

/// One limit shared by every queue of a device: its rate (units per second,
/// 0: unlimited) and its `tat` (see `RateMath`), each one atomic word. Queue
/// threads read the rate and compare-and-swap `tat`; no lock. Owned by a
/// `QoSLimiter`.
public struct RateBucket: ~Copyable, Sendable {
    let rate: Atomic<UInt64>
    let tat: Atomic<UInt64>

    init() {
        rate = Atomic(0)
        tat = Atomic(0)
    }

    /// The rate now (units per second; 0: unlimited).
    var currentRate: UInt64 { rate.load(ordering: .relaxed) }

    /// Ticks until a request may start at `now` (0 for an unlimited bucket).
    @inline(__always)
    func wait(now: UInt64, burst: UInt64) -> UInt64 {
        if rate.load(ordering: .relaxed) == 0 { return 0 }
        return RateMath.wait(tat: tat.load(ordering: .relaxed), now: now, burst: burst)
    }

    /// Charges a request of `units` started at `now` (one CAS loop).
    @inline(__always)
    func charge(units: UInt64, now: UInt64) {
        let cost = RateMath.cost(units: units, rate: rate.load(ordering: .relaxed))
        if cost == 0 { return }
        var old = tat.load(ordering: .relaxed)
        while true {
            let new = RateMath.charged(tat: old, now: now, cost: cost)
            let (exchanged, original) = tat.compareExchange(expected: old, desired: new, ordering: .relaxed)
            if exchanged { return }
            old = original
        }
    }

    /// A new rate from `now` on: the bucket starts full again (no debt, no
    /// credit carried over from the old rate). Control path only.
    func set(rate newRate: UInt64, now: UInt64) {
        rate.store(newRate, ordering: .relaxed)
        tat.store(now, ordering: .relaxed)
    }
}
