import BlockEngine

/// Turns the growth of one queue's service-time histogram between two syncs
/// into observations for a Prometheus histogram (which only takes one
/// observation at a time): each new request is recorded once, in its own
/// bucket, at a value chosen so that the recorded sum equals the measured
/// sum. Inside each finite bucket the values sit at the same fraction of the
/// bucket's width; the overflow bucket's requests share their own sum.
/// Stateless; the caller keeps the previous snapshot.
enum ServiceTimeReplay {
    /// Bucket upper bounds in seconds (the exported `le` values).
    static let boundsSeconds: [Double] = QueueCounters.bucketBoundsNanos.map { Double($0) / 1e9 }

    /// Calls `record(value, count)` for every bucket that grew (value in
    /// seconds, `count` observations of it).
    static func replay(from old: QueueCountersSnapshot, to new: QueueCountersSnapshot,
                       _ record: (Double, UInt64) -> Void) {
        let finite = QueueCounters.bucketBoundsNanos.count
        var grew = [UInt64](repeating: 0, count: new.buckets.count)
        for i in 0..<new.buckets.count {
            let before = i < old.buckets.count ? old.buckets[i] : 0
            grew[i] = new.buckets[i] >= before ? new.buckets[i] - before : new.buckets[i]
        }
        let overflowSum = Double(delta(new.overflowNanos, old.overflowNanos)) / 1e9
        let finiteSum = Double(delta(new.serviceNanos, old.serviceNanos)) / 1e9 - overflowSum
        var low = 0.0, high = 0.0
        for i in 0..<finite where grew[i] > 0 {
            low += Double(grew[i]) * (i == 0 ? 0 : boundsSeconds[i - 1])
            high += Double(grew[i]) * boundsSeconds[i]
        }
        // Where the measured sum lies between "all at the bucket floors" and
        // "all at the ceilings"; strictly above a floor, which belongs to the bucket below.
        var f = high > low ? (finiteSum - low) / (high - low) : 1
        f = min(1, max(1e-6, f.isFinite ? f : 1))
        for i in 0..<finite where grew[i] > 0 {
            let lo = i == 0 ? 0 : boundsSeconds[i - 1]
            record(lo + f * (boundsSeconds[i] - lo), grew[i])
        }
        if grew.count > finite, grew[finite] > 0 {
            let floor = boundsSeconds[finite - 1]
            record(max(overflowSum / Double(grew[finite]), floor * (1 + 1e-9)), grew[finite])
        }
    }

    static func delta(_ new: UInt64, _ old: UInt64) -> UInt64 { new >= old ? new - old : new }
}
