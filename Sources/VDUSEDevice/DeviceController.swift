import BlockBackends
import BlockEngine
import CSys
import CVDUSE
import Glibc
import Logging
import VirtioBlk
import VirtioCore

/// Answers control requests for one virtio-blk device: starts a worker per
/// ready queue on DRIVER_OK, stops them on reset, pauses them around IOTLB
/// changes, reports avail indices. Owns the per-queue backend handles, kick
/// eventfds, workers and the `--bounce user` adoption. Used from the control
/// thread only; never waits on backend I/O except to drain what is in flight
/// when quiescing.
public final class DeviceController<Transport: DeviceTransport>: @unchecked Sendable {
    final class QueueState {
        let backend: any QueueBackend
        let kickFD: Int32
        var worker: QueueWorker<Transport.Memory>?
        var memory: Transport.Memory?
        var lastAvail: UInt16 = 0

        init(backend: any QueueBackend, kickFD: Int32) {
            self.backend = backend
            self.kickFD = kickFD
        }
    }

    public let transport: Transport
    public let parameters: BlkDeviceParameters
    public let pollMicros: Int
    public let ringWait: Bool
    /// Serves the bounce region from daemon pages (`--bounce user`); nil when off.
    public let bounceAdoption: UserBounceAdoption?
    let logger: Logger
    let queues: [QueueState]
    public private(set) var status: UInt8 = 0
    public private(set) var negotiatedFeatures: UInt64 = 0

    public init(transport: Transport, parameters: BlkDeviceParameters, backend: any BlockBackendFactory,
                pollMicros: Int = 0, ringWait: Bool = false, userBounce: Bool = false,
                logger: Logger) throws(VDUSEError) {
        self.transport = transport
        self.parameters = parameters
        self.pollMicros = pollMicros
        self.ringWait = ringWait
        self.bounceAdoption = userBounce ? UserBounceAdoption(logger: logger) : nil
        self.logger = logger
        var qs: [QueueState] = []
        for i in 0..<Int(parameters.numQueues) {
            let handle: any QueueBackend
            do {
                handle = try backend.makeQueueBackend(queueIndex: i, depth: Int(parameters.queueSize))
            } catch {
                for q in qs { close(q.kickFD) }
                throw .attach("queue \(i): \(error)")
            }
            let kick = vb_eventfd(0, 1)
            guard kick >= 0 else {
                for q in qs { close(q.kickFD) }
                throw .ioctl(what: "eventfd", errno: -kick)
            }
            qs.append(QueueState(backend: handle, kickFD: kick))
        }
        queues = qs
    }

    deinit {
        stopQueues()
        for q in queues { close(q.kickFD) }
    }

    /// Serve the bounce region from daemon pages (`--bounce user`).
    public var userBounce: Bool { bounceAdoption != nil }

    /// Queues with a running worker.
    public var runningQueues: Int { queues.filter { $0.worker != nil }.count }

    /// True when some queue stopped on a ring it could not trust.
    public var needsReset: Bool { queues.contains { $0.worker?.control.needsReset ?? false } }

    public func handle(_ message: ControlMessage) -> ControlResponse {
        switch message {
        case .getVQState(let id, let q):
            guard Int(q) < queues.count else { return ControlResponse(requestID: id, ok: false) }
            let st = queues[Int(q)]
            let avail = st.worker?.control.currentAvailIndex ?? st.lastAvail
            return ControlResponse(requestID: id, ok: true, vqState: (q, avail))
        case .setStatus(let id, let s):
            setStatus(s)
            return ControlResponse(requestID: id, ok: true)
        case .updateIOTLB(let id, let start, let last):
            guard start <= last else { return ControlResponse(requestID: id, ok: false) }
            updateIOTLB(start: start, last: last)
            return ControlResponse(requestID: id, ok: true)
        case .unknown(let id, let type):
            logger.warning("unknown control request type \(type): answered FAILED")
            return ControlResponse(requestID: id, ok: false)
        }
    }

    func setStatus(_ s: UInt8) {
        let old = status
        status = s
        logger.debug("status 0x\(String(old, radix: 16)) -> 0x\(String(s, radix: 16))")
        if s == 0 {
            stopQueues()
            negotiatedFeatures = 0
            bounceAdoption?.cancel()
        } else if s & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) != 0, old & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) == 0 {
            startQueues()
        }
    }

    func startQueues() {
        do {
            negotiatedFeatures = try transport.negotiatedFeatures()
        } catch {
            logger.error("cannot read negotiated features: \(error)")
            return
        }
        logger.info("driver ready, features: \(VirtioFeature.names(negotiatedFeatures).joined(separator: " "))")
        for (i, st) in queues.enumerated() where st.worker == nil {
            do {
                let info = try transport.queueInfo(i)
                guard info.ready else { continue }
                let size = info.addresses.size
                guard size > 0, size & (size - 1) == 0, size <= parameters.queueSize else {
                    logger.error("queue \(i): driver chose size \(size) (max \(parameters.queueSize)); not started")
                    continue
                }
                try transport.attachKickFD(queue: i, fd: st.kickFD)
                let memory = transport.makeMemory(queue: i)
                let worker = try QueueWorker(
                    config: QueueWorkerConfig(queueIndex: i, addresses: info.addresses, features: negotiatedFeatures,
                                              startAvail: info.availIndex, pollMicros: pollMicros,
                                              ringWait: ringWait),
                    memory: memory, backend: st.backend, parameters: parameters, sink: transport.interruptSink,
                    kickFD: st.kickFD, logger: logger)
                st.memory = memory
                st.worker = worker
                worker.start()
            } catch {
                logger.error("queue \(i): cannot start: \(error)")
            }
        }
        logger.info("\(runningQueues) queue(s) running")
        if let adoption = bounceAdoption {
            adoption.restartCount()
            adoption.check(transport, pausingQueues: { withRunningQueuesPaused(invalidating: 0, last: .max, $0) })
        }
    }

    /// How long the control loop may sleep before `retryPending()` has
    /// something to do (milliseconds; -1: until the next request).
    public var retryAfterMillis: Int32 { bounceAdoption?.retryAfterMillis ?? -1 }

    /// Work the control thread retries on a timer.
    public func retryPending() {
        guard let adoption = bounceAdoption, adoption.isPending else { return }
        adoption.check(transport, pausingQueues: { withRunningQueuesPaused(invalidating: 0, last: .max, $0) })
    }

    /// Parks every running worker (no I/O in flight), runs `body`, drops the
    /// mappings of their views overlapping [start, last], and resumes them.
    func withRunningQueuesPaused(invalidating start: UInt64, last: UInt64, _ body: () -> Void) {
        let running = queues.filter { $0.worker != nil }
        for st in running { st.worker!.control.requestPause() }
        for st in running { st.worker!.control.waitParked() }
        body()
        for st in running { if let m = st.memory { transport.invalidate(m, start: start, last: last) } }
        for st in running { st.worker!.control.resume() }
    }

    /// Stops every worker (draining in-flight I/O) and drops their mappings.
    public func stopQueues() {
        for (i, st) in queues.enumerated() {
            guard let w = st.worker else { continue }
            st.lastAvail = w.control.stop()
            transport.detachKickFD(queue: i)
            if let m = st.memory { transport.invalidate(m, start: 0, last: .max) }
            st.worker = nil
            st.memory = nil
        }
    }

    func updateIOTLB(start: UInt64, last: UInt64) {
        withRunningQueuesPaused(invalidating: start, last: last) {}
    }
}
