import BlockBackends
import BlockEngine

/// What the exporter reads of one served device on each scrape: its name,
/// its queues' counters, whether the daemon serves it, and its backend's own
/// statistics. Owns nothing but references; every read is lock-free on the
/// queue side (`QueueCounters`) and never waits on I/O.
public struct DeviceMetricsSource: @unchecked Sendable {
    public let name: String
    public let queues: [QueueCounters]
    /// True while the daemon serves the device (created, not shut down).
    public let served: @Sendable () -> Bool
    /// The backend's counters (`BlockBackendFactory.statistics()`), nil if it keeps none.
    public let backendStatistics: @Sendable () -> [(String, UInt64)]?

    public init(name: String, queues: [QueueCounters], served: @escaping @Sendable () -> Bool,
                backendStatistics: @escaping @Sendable () -> [(String, UInt64)]?) {
        self.name = name
        self.queues = queues
        self.served = served
        self.backendStatistics = backendStatistics
    }

    /// Up: served and no queue stopped on a ring it cannot trust (NEEDS_RESET).
    public var up: Bool { served() && !queues.contains { $0.broken } }
}
