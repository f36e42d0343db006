import BlockBackends
import BlockEngine
import Logging
import VDUSEDevice
import VirtioBlk

/// The virtio-blk device type for the VDUSE layer: device id 2, the feature
/// set and config space `BlkDeviceParameters` describe, and one
/// `BlkQueueService` per queue with its own handle from the backend factory.
/// Owns the parameters, the factory, the queue workers' settings and each
/// queue's counters (read by statistics and metrics, never reset).
public final class VirtioBlkDeviceModel: VirtioDeviceModel {
    /// `VIRTIO_ID_BLOCK`.
    public static let virtioBlockDeviceID: UInt32 = 2

    public let parameters: BlkDeviceParameters
    public let backend: any BlockBackendFactory
    /// Spin this long on an empty avail ring before sleeping on the kick fd.
    public let pollMicros: Int
    /// Sleep in the backend's ring (io_uring) instead of poll() where it can.
    public let ringWait: Bool
    /// The device's QoS limits, shared by every queue's worker (unlimited until set).
    public let qos: QoSLimiter
    /// Request counters of every queue (index = queue), kept across resets.
    public let queueCounters: [QueueCounters]
    let logger: Logger

    public init(parameters: BlkDeviceParameters, backend: any BlockBackendFactory, pollMicros: Int = 0,
                ringWait: Bool = false, qos: QoSLimiter? = nil, logger: Logger) {
        self.parameters = parameters
        self.qos = qos ?? QoSLimiter()
        self.backend = backend
        self.pollMicros = pollMicros
        self.ringWait = ringWait
        self.logger = logger
        queueCounters = (0..<Int(parameters.numQueues)).map { QueueCounters(queueIndex: $0) }
    }

    public var deviceID: UInt32 { Self.virtioBlockDeviceID }
    public var offeredFeatures: UInt64 { parameters.offeredFeatures }
    public func configSpace() -> [UInt8] { parameters.configSpace() }
    public var queueCount: Int { Int(parameters.numQueues) }
    public var maxQueueSize: UInt16 { parameters.queueSize }
    public var summary: String { backend.summary }

    /// A queue service holding a fresh backend handle for queue `index`
    /// (`depth`: the largest ring); backend errors fail the device creation.
    public func makeQueueService(index: Int) throws -> any VirtqueueService {
        let handle = try backend.makeQueueBackend(queueIndex: index, depth: Int(parameters.queueSize))
        return BlkQueueService(backend: handle, model: self, counters: index < queueCounters.count ? queueCounters[index] : QueueCounters(queueIndex: index))
    }
}
