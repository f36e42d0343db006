import BlockBackends
import Glibc
import Logging
import VirtioBlk
import VirtioCore

/// A virtio-blk device served through VDUSE: creates it, sets up its queues,
/// runs the control loop, optionally binds it with `vdpa`, and tears all of
/// it down again (unbind, stop, close, DESTROY_DEV) leaving nothing behind.
public final class VDUSEBlockDevice {
    public let name: String
    public let parameters: BlkDeviceParameters
    let backend: any BlockBackendFactory
    let pollMicros: Int
    let ringWait: Bool
    let userBounce: Bool
    let logger: Logger
    let control: VDUSEControl
    var transport: VDUSETransport?
    var controller: DeviceController<VDUSETransport>?
    var loop: ControlLoop<VDUSETransport>?
    var created = false

    public init(name: String, parameters: BlkDeviceParameters, backend: any BlockBackendFactory,
                pollMicros: Int = 0, ringWait: Bool = false, userBounce: Bool = false,
                logger: Logger) throws(VDUSEError) {
        try VDUSEControl.validate(name: name)
        self.userBounce = userBounce
        self.name = name
        self.parameters = parameters
        self.backend = backend
        self.pollMicros = pollMicros
        self.ringWait = ringWait
        self.logger = logger
        control = try VDUSEControl()
    }

    /// Creates the VDUSE device, sets up every queue and starts answering control requests.
    public func create() throws(VDUSEError) {
        try control.createDevice(name: name, deviceID: 2, features: parameters.offeredFeatures,
                                 queues: UInt32(parameters.numQueues), config: parameters.configSpace())
        created = true
        do {
            let t = try VDUSETransport(name: name)
            transport = t
            for q in 0..<Int(parameters.numQueues) { try t.setupQueue(q, maxSize: parameters.queueSize) }
            let c = try DeviceController(transport: t, parameters: parameters, backend: backend,
                                         pollMicros: pollMicros, ringWait: ringWait, userBounce: userBounce,
                                         logger: logger)
            controller = c
            let l = try ControlLoop(deviceFD: t.fd, controller: c, logger: logger)
            loop = l
            try l.start()
        } catch {
            shutdown()
            throw error
        }
        logger.info("created /dev/vduse/\(name): \(parameters.capacityBytes) bytes, \(parameters.numQueues) queue(s) of \(parameters.queueSize), \(backend.summary)")
    }

    /// Binds the device to the vdpa bus (`vdpa dev add name NAME mgmtdev vduse`).
    public func attach() throws(VDUSEError) {
        try VdpaTool.add(name: name)
        let driver = VdpaTool.driver(name: name) ?? "no driver"
        var disk = ""
        for _ in 0..<100 {
            if let b = VdpaTool.blockDevice(name: name) { disk = " as /dev/\(b)"; break }
            if driver != "virtio_vdpa" { break }
            usleep(20_000)
        }
        logger.info("attached \(name) via \(driver)\(disk)")
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
