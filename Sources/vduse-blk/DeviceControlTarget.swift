import BlockBackends
import BlockEngine
import Glibc
import Logging
import VDUSEBlk
import VDUSEDevice
import VirtioCore

/// The running daemon's answers on its control socket: a `VDUSEBlockDevice`
/// and its backend. Runs on the control socket's thread: reads counters and
/// sysfs, resizes (ftruncate + two ioctls), never waits on queue I/O.
final class DeviceControlTarget: ControlTarget {
    let device: VDUSEBlockDevice
    let factory: any BlockBackendFactory
    let started = time(nil)

    init(device: VDUSEBlockDevice, factory: any BlockBackendFactory) {
        self.device = device
        self.factory = factory
    }

    func stats() -> [String: Any] {
        var fields: [String: Any] = [
            "name": device.name, "capacity_bytes": device.currentCapacityBytes,
            "uptime_s": Int(time(nil) - started),
            "limits": QoSWire.object(device.qos.limits),
        ]
        // Ordered name/value pairs (the backend's own order), or null when it keeps none.
        if let rows = factory.statistics() {
            fields["backend"] = rows.map { [$0.0, $0.1] as [Any] }
        } else {
            fields["backend"] = JSONText.null
        }
        fields["queues"] = device.queueCounters.map { Self.queueStats($0.snapshot(), index: $0.queueIndex) }
        return fields
    }

    /// One queue's counters as the `stats` reply carries them (docs/control-socket.md).
    static func queueStats(_ s: QueueCountersSnapshot, index: Int) -> [String: Any] {
        var requests: [String: Any] = [:], failures: [String: Any] = [:]
        for k in RequestKind.allCases {
            requests[k.label] = s.requests[k.rawValue]
            if RequestKind.backendKinds.contains(k) { failures[k.label] = s.failures[k.rawValue] }
        }
        return ["queue": index, "requests": requests, "failures": failures, "read_bytes": s.bytesRead,
                "written_bytes": s.bytesWritten, "in_flight": s.inFlight,
                "service_time_avg_us": s.completed == 0 ? 0 : s.serviceNanos / s.completed / 1000,
                "completed": s.completed, "service_time_sum_ns": s.serviceNanos,
                // Non-cumulative counts; bucket i holds service times up to
                // service_time_bounds_us[i], the last one the rest.
                "service_time_buckets": s.buckets,
                "service_time_bounds_us": QueueCounters.bucketBoundsNanos.map { $0 / 1000 }]
    }

    func info() -> [String: Any] {
        let p = device.parameters
        var fields: [String: Any] = [
            "name": device.name, "pid": Int(getpid()),
            "size_bytes": device.currentCapacityBytes, "block_size": Int(p.blockSize),
            "queues": Int(p.numQueues), "queue_size": Int(p.queueSize), "read_only": p.readOnly,
            "backend": factory.summary,
            "features": VirtioFeature.names(p.offeredFeatures),
            "limits": QoSWire.object(device.qos.limits),
        ]
        if let driver = VdpaTool.driver(name: device.name) {
            fields["binding"] = driver
        } else {
            fields["binding"] = VdpaTool.isBound(name: device.name) ? "none" : "unbound"
        }
        if let disk = device.blockDeviceName { fields["disk"] = "/dev/\(disk)" }
        return fields
    }

    func resize(bytes: UInt64, shrink: Bool) throws(ControlError) -> [String: Any] {
        do {
            let r = try device.resize(to: bytes, allowShrink: shrink)
            var fields: [String: Any] = ["old_bytes": r.oldBytes, "new_bytes": r.newBytes, "interrupt_sent": r.interruptSent]
            if let note = r.interruptNote { fields["note"] = note }
            return fields
        } catch {
            throw ControlError(code: error.code, message: error.description)
        }
    }

    func stop() -> [String: Any] {
        ["stopping": true, "pid": Int(getpid())]
    }

    func setLimits(_ changes: [String: UInt64]) throws(ControlError) -> [String: Any] {
        let limits = try QoSWire.apply(changes, to: device.qos)
        Logger(label: "vduse-blk").notice("\(device.name): QoS limits now \(QoSOptions.describe(limits))")
        return ["limits": QoSWire.object(limits)]
    }
}

extension CreateCommand {
    /// Serves NAME's control socket for the running `device`; a `stop`
    /// request raises SIGTERM, the path Ctrl-C and `kill` take. Failing to
    /// bind is logged, not fatal: the device still serves.
    func startControlServer(device: VDUSEBlockDevice, factory: any BlockBackendFactory, logger: Logger) -> ControlServer? {
        _ = mkdir(StatsFile.directory, 0o755)
        do throws(ControlError) {
            let server = try ControlServer(
                path: ControlSocketPath.path(for: device.name),
                target: DeviceControlTarget(device: device, factory: factory),
                onStop: { kill(getpid(), SIGTERM) })
            try server.start()
            logger.info("control socket \(server.path)")
            return server
        } catch {
            logger.error("no control socket: \(error.message)")
            return nil
        }
    }
}
