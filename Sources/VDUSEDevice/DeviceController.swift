import CSys
import CVDUSE
import Glibc
import SystemSupport
import Logging
import VirtioCore

/// Answers control requests for one VDUSE device of any virtio type: starts
/// the device model's queue services on DRIVER_OK, stops them on reset,
/// pauses them around IOTLB changes, reports avail indices. Owns the queue
/// services (made by the model once, kept across resets), the kick eventfds,
/// each running queue's guest-memory view and the `--bounce user` adoption.
/// Used from the control thread only; never waits on the queues' I/O except
/// to drain what is in flight when quiescing.
public final class DeviceController<Transport: DeviceTransport>: @unchecked Sendable {
    final class QueueState {
        let service: any VirtqueueService
        let kickFD: Int32
        var running = false
        var memory: Transport.Memory?
        var lastAvail: UInt16 = 0

        init(service: any VirtqueueService, kickFD: Int32) {
            self.service = service
            self.kickFD = kickFD
        }
    }

    public let transport: Transport
    public let model: any VirtioDeviceModel
    /// Serves the bounce region from daemon pages (`--bounce user`); nil when off.
    public let bounceAdoption: UserBounceAdoption?
    let logger: Logger
    let queues: [QueueState]
    public private(set) var status: UInt8 = 0
    public private(set) var negotiatedFeatures: UInt64 = 0
    /// The device's in-flight log (driver status, features, one region per
    /// queue); nil: not logged. Set before the control loop starts.
    public var inflightLog: InflightLogFile?

    /// Makes every queue's service and kick eventfd (the model's errors
    /// become `.attach("queue N: ...")`).
    public init(transport: Transport, model: any VirtioDeviceModel, userBounce: Bool = false,
                logger: Logger) throws(VDUSEError) {
        self.transport = transport
        self.model = model
        self.bounceAdoption = userBounce ? UserBounceAdoption(logger: logger) : nil
        self.logger = logger
        var qs: [QueueState] = []
        for i in 0..<model.queueCount {
            let service: any VirtqueueService
            do {
                service = try model.makeQueueService(index: i)
            } catch {
                for q in qs { close(q.kickFD) }
                throw .attach("queue \(i): \(error)")
            }
            let kick: Int32
            do { kick = try EventFD().fd } catch {
                for q in qs { close(q.kickFD) }
                throw .system(error)
            }
            qs.append(QueueState(service: service, kickFD: kick))
        }
        queues = qs
    }

    deinit {
        stopQueues()
        for q in queues { close(q.kickFD) }
    }

    /// Serve the bounce region from daemon pages (`--bounce user`).
    public var userBounce: Bool { bounceAdoption != nil }

    /// Queues with a running service.
    public var runningQueues: Int { queues.filter { $0.running }.count }

    /// True when some queue stopped on a ring it could not trust.
    public var needsReset: Bool { queues.contains { $0.running && $0.service.needsReset } }

    public func handle(_ message: ControlMessage) -> ControlResponse {
        switch message {
        case .getVQState(let id, let q):
            guard Int(q) < queues.count else { return ControlResponse(requestID: id, ok: false) }
            let st = queues[Int(q)]
            let avail = st.running ? st.service.currentAvailIndex : st.lastAvail
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
            if let log = inflightLog {
                // Queues drained: nothing is in flight. A crash from here on adopts a reset device.
                for i in 0..<min(log.queueCount, queues.count) { log.queue(i).reset(queueIndex: UInt16(i)) }
                log.record(features: 0)
            }
            inflightLog?.record(status: 0)
        } else if s & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) != 0, old & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) == 0 {
            inflightLog?.record(status: s)
            startQueues()
        } else {
            inflightLog?.record(status: s)
        }
    }

    /// Takes over a device whose previous daemon died (its fd is open here
    /// again; the kernel kept features, rings and IOTLB): the driver status
    /// and queue progress come from the in-flight log. If the driver was
    /// running, every queue resumes where the log says, resubmits what was
    /// in flight, scans its ring once and gets one interrupt. Throws (having
    /// started nothing) when the log and the kernel disagree.
    public func adopt() throws(VDUSEError) {
        guard let log = inflightLog else { throw .attach("adopting a device needs its in-flight log") }
        let s = log.status
        logger.info("adopting: driver status 0x\(String(s, radix: 16)) per the in-flight log")
        if s & UInt8(VB_VIRTIO_STATUS_FEATURES_OK) != 0, s & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) != 0 {
            let kernel = try transport.negotiatedFeatures()
            let logged = log.negotiatedFeatures
            if logged != 0, logged != kernel {
                throw .attach("in-flight log says features 0x\(String(logged, radix: 16)), the kernel "
                    + "0x\(String(kernel, radix: 16)): not the same driver session")
            }
        }
        status = s
        guard s & UInt8(VB_VIRTIO_STATUS_DRIVER_OK) != 0 else { return }
        try startQueues(adopting: true)
        for (i, st) in queues.enumerated() where st.running {
            _ = transport.interruptSink.interrupt(queue: i)
        }
    }

    func startQueues() {
        do throws(VDUSEError) { try startQueues(adopting: false) } catch { logger.error("\(error)") }
    }

    func startQueues(adopting: Bool) throws(VDUSEError) {
        do {
            negotiatedFeatures = try transport.negotiatedFeatures()
        } catch {
            logger.error("cannot read negotiated features: \(error)")
            if adopting { throw error }
            return
        }
        inflightLog?.record(features: negotiatedFeatures)
        // Adopting: check every queue's log against the kernel before starting any.
        var recovered: [Int: InflightQueueLog.Recovery] = [:]
        if adopting, let log = inflightLog {
            for i in queues.indices where i < log.queueCount {
                let info = try transport.queueInfo(i)
                guard info.ready else { continue }
                let memory = transport.makeMemory(queue: i)
                defer { transport.invalidate(memory, start: 0, last: .max) }
                do throws(InflightLogError) {
                    if let r = try log.queue(i).recover(queueIndex: UInt16(i), addresses: info.addresses,
                                                        memory: memory) {
                        recovered[i] = r
                        // The text keeps "queue N:" (scripts/guest-suite.d/13-reconnect.sh quotes the line).
                        logger.forQueue(i).info("queue \(i): resuming at avail \(r.startAvail), used \(r.usedIdx), \(r.resubmit.count) request(s) to resubmit, \(r.reconciled) found already returned")
                    }
                } catch {
                    throw .attach("cannot adopt: \(error)")
                }
            }
        }
        logger.info("driver ready, features: \(VirtioFeature.names(negotiatedFeatures).joined(separator: " "))")
        let maxSize = model.maxQueueSize
        for (i, st) in queues.enumerated() where !st.running {
            do {
                let info = try transport.queueInfo(i)
                guard info.ready else { continue }
                let size = info.addresses.size
                guard size > 0, size & (size - 1) == 0, size <= maxSize else {
                    logger.forQueue(i).error("driver chose size \(size) (max \(maxSize)); not started")
                    continue
                }
                try transport.attachKickFD(queue: i, fd: st.kickFD)
                let memory = transport.makeMemory(queue: i)
                var startAvail = info.availIndex
                var queueLog: InflightQueueLog?
                var resubmit: [UInt16] = []
                var nextSeq: UInt64 = 1
                if let log = inflightLog, i < log.queueCount {
                    let ql = log.queue(i)
                    if let r = recovered[i] {
                        startAvail = r.startAvail
                        resubmit = r.resubmit
                        nextSeq = r.nextSeq
                    } else {
                        let used = memory.contiguous(info.addresses.usedRing, length: 4, write: true)
                            .map { UInt16(littleEndian: vb_load_acquire_u16($0 + 2)) } ?? 0
                        ql.begin(queueIndex: UInt16(i), addresses: info.addresses, startAvail: startAvail,
                                 usedIdx: used)
                    }
                    queueLog = ql
                }
                try st.service.start(
                    VirtqueueStart(queueIndex: i, addresses: info.addresses, features: negotiatedFeatures,
                                   startAvail: startAvail, kickFD: st.kickFD,
                                   interruptSink: transport.interruptSink, log: queueLog,
                                   resubmit: resubmit, nextSeq: nextSeq),
                    memory: memory)
                st.memory = memory
                st.running = true
                logger.forQueue(i).debug("started: size \(size), avail \(startAvail)\(resubmit.isEmpty ? "" : ", \(resubmit.count) to resubmit")")
            } catch {
                logger.forQueue(i).error("cannot start: \(error)")
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

    /// Parks every running queue (no I/O in flight), runs `body`, drops the
    /// mappings of their views overlapping [start, last], and resumes them.
    func withRunningQueuesPaused(invalidating start: UInt64, last: UInt64, _ body: () -> Void) {
        let running = queues.filter { $0.running }
        for st in running { st.service.requestPause() }
        for st in running { st.service.waitParked() }
        body()
        for st in running { if let m = st.memory { transport.invalidate(m, start: start, last: last) } }
        for st in running { st.service.resume() }
    }

    /// Stops every queue (draining in-flight I/O) and drops their mappings.
    public func stopQueues() {
        for (i, st) in queues.enumerated() where st.running {
            st.lastAvail = st.service.stop()
            logger.forQueue(i).debug("stopped at avail \(st.lastAvail)")
            transport.detachKickFD(queue: i)
            if let m = st.memory { transport.invalidate(m, start: 0, last: .max) }
            st.running = false
            st.memory = nil
        }
    }

    func updateIOTLB(start: UInt64, last: UInt64) {
        withRunningQueuesPaused(invalidating: start, last: last) {}
    }
}
