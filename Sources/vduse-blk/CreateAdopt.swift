import Glibc
import Logging
import VDUSEBlk
import VDUSEDevice

/// How `create` starts a device: a new one, or (issue 14) the existing
/// device NAME whose daemon died, taken over from its in-flight log.
extension CreateCommand {
    /// Takes the device's state-directory lock (a live owner is an error
    /// naming its pid), then creates the device with a fresh in-flight log,
    /// or adopts `/dev/vduse/NAME` when it already exists. Returns true when
    /// it adopted. Nothing is changed when the options do not match the
    /// existing device.
    func createOrAdopt(_ device: VDUSEBlockDevice, logger: Logger) throws(VDUSEError) -> Bool {
        let state = try DeviceStateDirectory(name: name)
        let logPath = "\(state.path)/inflight"
        let queues = device.model.queueCount
        let maxSize = device.model.maxQueueSize
        if noInflightLog { return try createWithoutLog(device, state: state, logPath: logPath, logger: logger) }
        if access("/dev/vduse/\(name)", F_OK) == 0 {
            guard access(logPath, F_OK) == 0 else {
                throw .attach("a VDUSE device named \(name) already exists and has no in-flight log in "
                    + "\(state.path): it was not made by vduse-blk, was made with --no-inflight-log, or its "
                    + "log was lost; remove it with `vduse-blk destroy \(name)`")
            }
            let log = try InflightLogFile(path: logPath, queueCount: queues, maxQueueSize: maxSize,
                                          identity: device.identity, fresh: false)
            device.stateDirectory = state
            device.inflightLog = log
            logger.info("\(name) exists and its daemon is gone: adopting it")
            do {
                try device.adopt()
            } catch {
                device.stateDirectory = nil
                device.inflightLog = nil
                if case .busy = error {
                    throw .attach("device \(name) is open in another process (not a vduse-blk daemon of this "
                        + "run directory, \(DeviceStateDirectory.runDirectory)); stop it first")
                }
                throw error
            }
            do throws(CLIFailure) { try recordBackend(in: state) } catch {
                logger.warning("\(error.message)")
            }
            return true
        }
        do throws(CLIFailure) { try recordBackend(in: state) } catch { throw .attach(error.message) }
        device.stateDirectory = state
        device.inflightLog = try InflightLogFile(path: logPath, queueCount: queues, maxQueueSize: maxSize,
                                                 identity: device.identity, fresh: true)
        try device.create()
        return false
    }
}

extension CreateCommand {
    /// `--no-inflight-log` (benchmarks: the A/B of the log's cost): a new
    /// device served without the in-flight log. The state-directory lock is
    /// still held (a second daemon is refused); a stale log left in the
    /// directory is removed, so that after a crash the same `create` says the
    /// device cannot be adopted instead of trusting a log of another device.
    /// An existing device is never adopted this way.
    func createWithoutLog(_ device: VDUSEBlockDevice, state: DeviceStateDirectory, logPath: String,
                          logger: Logger) throws(VDUSEError) -> Bool {
        if access("/dev/vduse/\(name)", F_OK) == 0 {
            throw .attach("a VDUSE device named \(name) already exists: --no-inflight-log only creates new "
                + "devices (adopt it without that flag, or remove it with `vduse-blk destroy \(name)`)")
        }
        unlink(logPath)
        device.stateDirectory = state
        device.inflightLog = nil
        logger.warning("--no-inflight-log: \(name) has no in-flight log; after a crash or SIGUSR2 it cannot be adopted (`vduse-blk destroy \(name)` removes it)")
        try device.create()
        return false
    }
}

extension CreateCommand {
    /// Refuses at once, before the image is opened (whose own lock would
    /// give a vaguer message), when a live daemon serves device NAME.
    func refuseIfServedElsewhere() throws {
        if let pid = DeviceStateDirectory.livingOwner(of: name), pid != getpid() {
            throw CLIFailure(message: "device \(name) is in use by pid \(pid) (lock "
                + "\(DeviceStateDirectory.path(for: name))/lock); stop that daemon first")
        }
    }
}
