@_exported import BlockBackends
import BlockEngine
import Glibc
@_exported import Logging
@_exported import VDUSEDevice
@_exported import VirtioBlk

/// A virtio-blk device served through VDUSE from any `BlockBackendFactory`:
/// creates it, sets up its queues, runs the control loop, optionally binds it
/// with `vdpa`, and tears all of it down again (unbind, stop, close,
/// DESTROY_DEV) leaving nothing behind. Owns the served device and its
/// virtio-blk model; the factory stays the caller's.
///
///     // Block SIGINT/SIGTERM first: the device's threads must not take them.
///     let device = try VDUSEBlockDevice(name: "vdb0", parameters: p, backend: factory, logger: logger)
///     try device.create()
///     try device.attach()
///     sigwait(&signals, &sig)
///     device.shutdown()
public final class VDUSEBlockDevice {
    public let name: String
    public let parameters: BlkDeviceParameters
    public let model: VirtioBlkDeviceModel
    let device: ServedVDUSEDevice
    let logger: Logger

    /// Checks the name and opens `/dev/vduse/control`; creates nothing yet.
    /// `pollMicros`: spin this long on an empty ring before sleeping;
    /// `ringWait`: sleep in the backend's io_uring where it can;
    /// `userBounce`: serve the bounce region from daemon pages (`--bounce user`).
    public init(name: String, parameters: BlkDeviceParameters, backend: any BlockBackendFactory,
                pollMicros: Int = 0, ringWait: Bool = false, userBounce: Bool = false,
                logger: Logger = Logger(label: "vduse-blk")) throws(VDUSEError) {
        self.name = name
        var parameters = parameters
        // One capacity cell for every queue's parser, so `resize` reaches them all.
        if parameters.liveCapacity == nil { parameters.liveCapacity = LiveCapacity(bytes: parameters.capacityBytes) }
        self.parameters = parameters
        self.logger = logger
        model = VirtioBlkDeviceModel(parameters: parameters, backend: backend, pollMicros: pollMicros,
                                     ringWait: ringWait, logger: logger)
        device = try ServedVDUSEDevice(name: name, model: model, userBounce: userBounce, logger: logger)
    }

    /// Creates the VDUSE device, sets up every queue and starts answering
    /// control requests (on threads of its own: block the signals you wait
    /// for before calling this). On failure nothing is left behind.
    /// The state directory and in-flight log (see `ServedVDUSEDevice`).
    public var stateDirectory: DeviceStateDirectory? {
        get { device.stateDirectory }
        set { device.stateDirectory = newValue }
    }
    public var inflightLog: InflightLogFile? {
        get { device.inflightLog }
        set { device.inflightLog = newValue }
    }

    /// What an adopting daemon's options must match (see `InflightLogFile.identity`).
    public var identity: UInt64 {
        InflightLogFile.identity(deviceID: model.deviceID, features: model.offeredFeatures,
                                 queueCount: model.queueCount, maxQueueSize: model.maxQueueSize,
                                 config: model.configSpace())
    }

    /// Takes over the existing device left by a dead daemon (see `ServedVDUSEDevice.adopt`).
    public func adopt() throws(VDUSEError) {
        try device.adopt()
        logger.info("adopted /dev/vduse/\(name): \(parameters.capacityBytes) bytes, \(parameters.numQueues) queue(s) of \(parameters.queueSize), \(model.summary)")
    }

    public func create() throws(VDUSEError) {
        try device.create()
        logger.info("created /dev/vduse/\(name): \(parameters.capacityBytes) bytes, \(parameters.numQueues) queue(s) of \(parameters.queueSize), \(model.summary)")
    }

    /// Binds the device to the vdpa bus (`vdpa dev add name NAME mgmtdev vduse`)
    /// and, under virtio_vdpa, waits briefly for its block device to appear.
    public func attach() throws(VDUSEError) {
        let driver = try device.attach() ?? "no driver"
        var disk = ""
        for _ in 0..<100 {
            if let b = VdpaTool.blockDevice(name: name) { disk = " as /dev/\(b)"; break }
            if driver != "virtio_vdpa" { break }
            usleep(20_000)
        }
        logger.info("attached \(name) via \(driver)\(disk)")
    }

    /// The device's QoS limits (`QoSLimiter.set` changes them live, for every queue at once).
    public var qos: QoSLimiter { model.qos }
    /// Request counters of every queue since the device was made (index = queue).
    public var queueCounters: [QueueCounters] { model.queueCounters }

    /// The block device node's name under /dev (`vda`) once bound to virtio_vdpa.
    public var blockDeviceName: String? { VdpaTool.blockDevice(name: name) }

    /// Unbinds (if bound), stops the queues and control loop, closes the
    /// device and destroys it. Safe to call more than once.
    public func shutdown() { device.shutdown() }

    /// Leaves the device to the next daemon (see `ServedVDUSEDevice.handOver`).
    public func handOver() { device.handOver() }
}
