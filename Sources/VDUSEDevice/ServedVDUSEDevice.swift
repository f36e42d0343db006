import Glibc
import Logging

/// A VDUSE device of any virtio type served by this process: creates it from
/// a device model, sets up its queues, runs the control loop, optionally
/// binds it with `vdpa`, and tears all of it down again (unbind, stop,
/// close, DESTROY_DEV) leaving nothing behind. Owns the control node, the
/// device fd (through its transport), the controller and the control loop.
public final class ServedVDUSEDevice {
    public let name: String
    public let model: any VirtioDeviceModel
    let userBounce: Bool
    let logger: Logger
    let control: VDUSEControl
    var transport: VDUSETransport?
    var controller: DeviceController<VDUSETransport>?
    var loop: ControlLoop<VDUSETransport>?
    var created = false
    /// The device's state directory (lock) and in-flight log; set before
    /// `create` or `adopt` to survive a daemon crash. Removed once
    /// VDUSE_DESTROY_DEV succeeded.
    public var stateDirectory: DeviceStateDirectory?
    public var inflightLog: InflightLogFile?

    /// Checks the name and opens `/dev/vduse/control`; creates nothing yet.
    public init(name: String, model: any VirtioDeviceModel, userBounce: Bool = false,
                logger: Logger) throws(VDUSEError) {
        try VDUSEControl.validate(name: name)
        self.userBounce = userBounce
        self.name = name
        self.model = model
        self.logger = logger
        control = try VDUSEControl()
    }

    /// Creates the VDUSE device, sets up every queue and starts answering
    /// control requests (on a thread of its own: block the signals you wait
    /// for before calling this). On failure nothing is left behind.
    public func create() throws(VDUSEError) {
        try control.createDevice(name: name, deviceID: model.deviceID, features: model.offeredFeatures,
                                 queues: UInt32(model.queueCount), config: model.configSpace())
        created = true
        do {
            let t = try VDUSETransport(name: name)
            transport = t
            for q in 0..<model.queueCount { try t.setupQueue(q, maxSize: model.maxQueueSize) }
            let c = try DeviceController(transport: t, model: model, userBounce: userBounce, logger: logger)
            c.inflightLog = inflightLog
            controller = c
            let l = try ControlLoop(deviceFD: t.fd, controller: c, logger: logger)
            loop = l
            try l.start()
        } catch {
            shutdown()
            throw error
        }
    }

    /// Takes over the existing device NAME whose daemon died: reopens
    /// `/dev/vduse/NAME` (no VQ_SETUP: the queues are set up, and API v1
    /// refuses it after DRIVER_OK), rebuilds the queues from the in-flight
    /// log (`inflightLog`, opened for adoption) and the rings, then answers
    /// the control messages the kernel re-queued. On failure the device is
    /// left as it was (closed again, not destroyed).
    public func adopt() throws(VDUSEError) {
        let t = try VDUSETransport(name: name)
        do {
            if !VdpaTool.isBound(name: name) {
                // The previous daemon may have died between CREATE_DEV and the last
                // VQ_SETUP; with no driver bound, setting the queues up again is safe.
                for q in 0..<model.queueCount {
                    do { try t.setupQueue(q, maxSize: model.maxQueueSize) } catch {
                        logger.debug("adopt: \(error) (left as the previous daemon set it up)")
                    }
                }
            }
            let c = try DeviceController(transport: t, model: model, userBounce: userBounce, logger: logger)
            c.inflightLog = inflightLog
            try c.adopt()
            transport = t
            controller = c
            created = true
            let l = try ControlLoop(deviceFD: t.fd, controller: c, logger: logger)
            loop = l
            try l.start()
        } catch {
            loop = nil
            controller?.stopQueues()
            controller = nil
            transport = nil
            created = false
            throw error
        }
    }

    /// Binds the device to the vdpa bus (`vdpa dev add name NAME mgmtdev vduse`)
    /// and returns the driver the kernel bound it to (`virtio_vdpa`,
    /// `vhost_vdpa`), nil if none.
    @discardableResult
    public func attach() throws(VDUSEError) -> String? {
        try VdpaTool.add(name: name)
        return VdpaTool.driver(name: name)
    }

    /// Planned hand-over to another daemon (an upgrade): stops answering
    /// control messages, drains every queue (all in flight completes and is
    /// published, so the log holds no in-flight head), and closes the device
    /// without unbinding or destroying it. The driver keeps its status; the
    /// next daemon's `adopt` continues from the log. Control messages sent
    /// meanwhile wait in the kernel for the next daemon (answer within
    /// msg_timeout, 30 s by default).
    public func handOver() {
        loop?.stop()
        loop = nil
        controller?.stopQueues()
        controller = nil
        transport = nil
        created = false
        inflightLog = nil
        stateDirectory = nil
        logger.info("handed \(name) over: device left bound, queues drained, log kept")
    }

    /// Unbinds (if bound), stops the queues and control loop, closes the
    /// device and destroys it. Safe to call more than once.
    public func shutdown() {
        if VdpaTool.isBound(name: name) {
            do { try VdpaTool.delete(name: name) } catch { logger.error("\(error)") }
        }
        loop?.stop()
        loop = nil
        controller?.stopQueues()
        controller = nil
        transport = nil
        guard created else { return }
        for attempt in 0..<50 {
            do {
                try control.destroyDevice(name: name)
                created = false
                inflightLog = nil
                stateDirectory?.remove()
                logger.info("destroyed \(name)")
                return
            } catch {
                if case .busy = error, attempt < 49 { usleep(100_000); continue }
                logger.error("cannot destroy \(name): \(error)")
                return
            }
        }
    }
}
