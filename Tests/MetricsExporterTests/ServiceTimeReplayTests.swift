@testable import BlockEngine
@testable import MetricsExporter
import XCTest

final class ServiceTimeReplayTests: XCTestCase {
    /// Every replayed observation lands in the bucket the queue counted it in,
    /// and the replayed sum is the measured sum.
    func testReplayKeepsBucketsAndTheSum() {
        var rng = SystemRandomNumberGenerator()
        let counters = QueueCounters(queueIndex: 0)
        var previous = counters.snapshot()
        for round in 0..<50 {
            let n = Int.random(in: 0...300, using: &rng)
            for _ in 0..<n {
                // Log-uniform from 1 ns to ~4 s, so every bucket and the overflow get some.
                let ns = UInt64(exp(Double.random(in: 0...22.1, using: &rng)))
                counters.recordCompletion(.read, nanos: ns)
            }
            let now = counters.snapshot()
            var got = [UInt64](repeating: 0, count: now.buckets.count)
            var sum = 0.0
            ServiceTimeReplay.replay(from: previous, to: now) { value, count in
                let i = ServiceTimeReplay.boundsSeconds.firstIndex { value <= $0 } ?? ServiceTimeReplay.boundsSeconds.count
                got[i] += count
                sum += value * Double(count)
            }
            let want = zip(now.buckets, previous.buckets).map { $0 - $1 }
            XCTAssertEqual(got, want, "round \(round)")
            let measured = Double(now.serviceNanos - previous.serviceNanos) / 1e9
            XCTAssertEqual(sum, measured, accuracy: max(1e-9, measured * 1e-9), "round \(round)")
            previous = now
        }
    }
}
