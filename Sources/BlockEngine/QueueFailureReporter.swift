import Glibc
import Logging

/// Logs backing-store failures from the queues' counters, never from a queue
/// thread: each `report()` (the daemon calls it once a second) writes at
/// most one warning line per queue that saw new failures since the previous
/// call: device, queue, how many by type, and the last error. Owns the
/// failure totals it last reported; call it from one thread at a time.
public final class QueueFailureReporter {
    public let device: String
    let queues: [QueueCounters]
    let logger: Logger
    var reported: [[UInt64]]

    /// Starts from the counters' current totals (failures before this are not reported).
    public init(device: String, queues: [QueueCounters], logger: Logger) {
        self.device = device
        self.queues = queues
        self.logger = logger
        reported = queues.map { $0.snapshot().failures }
    }

    /// Logs one line per queue with new failures; returns the lines (for tests).
    @discardableResult
    public func report() -> [String] {
        var lines: [String] = []
        for (i, q) in queues.enumerated() {
            let now = q.snapshot()
            var parts: [String] = []
            var total: UInt64 = 0
            for k in RequestKind.allCases where now.failures[k.rawValue] > reported[i][k.rawValue] {
                let n = now.failures[k.rawValue] - reported[i][k.rawValue]
                total += n
                parts.append("\(k.label) \(n)")
            }
            reported[i] = now.failures
            guard total > 0 else { continue }
            let line = "device \(device) queue \(q.queueIndex): \(total) request(s) failed by the backing store"
                + " (\(parts.joined(separator: ", "))); last: \(Self.describe(now))"
            logger.warning("\(line)")
            lines.append(line)
        }
        return lines
    }

    /// "write: No space left on device (errno 28)" or "read: short transfer (N bytes)".
    static func describe(_ s: QueueCountersSnapshot) -> String {
        let op = s.lastFailureKind?.label ?? "request"
        if s.lastFailureResult < 0, s.lastFailureResult >= -4095 {
            let e = Int32(-s.lastFailureResult)
            return "\(op): \(String(cString: strerror(e))) (errno \(e))"
        }
        return "\(op): short transfer (\(s.lastFailureResult) bytes)"
    }
}
