import BlockBackends
import BlockEngine
import Logging
import VDUSEDevice
import VirtioCore

/// One virtio-blk queue as the VDUSE layer sees it: a `QueueWorker` thread
/// from DRIVER_OK to reset, serving through this queue's backend handle.
/// Owns the backend handle and the queue's counters (both kept across resets,
/// handed to each new worker) and the running worker. Control thread only; the worker's request loop
/// never goes through this type.
final class BlkQueueService: VirtqueueService {
    let backend: any QueueBackend
    let model: VirtioBlkDeviceModel
    let counters: QueueCounters
    /// The running worker (a `QueueWorker<Memory>` for the transport's memory type).
    var worker: AnyObject?
    var control: WorkerControl?

    init(backend: any QueueBackend, model: VirtioBlkDeviceModel, counters: QueueCounters) {
        self.backend = backend
        self.model = model
        self.counters = counters
    }

    func start<Memory: GuestMemory>(_ queue: VirtqueueStart, memory: Memory) throws {
        let w = try QueueWorker(
            config: QueueWorkerConfig(queueIndex: queue.queueIndex, addresses: queue.addresses,
                                      features: queue.features, startAvail: queue.startAvail,
                                      pollMicros: model.pollMicros, ringWait: model.ringWait,
                                      log: queue.log, resubmit: queue.resubmit, nextSeq: queue.nextSeq,
                                      qos: model.qos, counters: counters),
            memory: memory, backend: backend, parameters: model.parameters, sink: queue.interruptSink,
            kickFD: queue.kickFD, logger: model.logger.forQueue(queue.queueIndex))
        worker = w
        control = w.control
        w.start()
    }

    func requestPause() { control?.requestPause() }
    func waitParked() { control?.waitParked() }
    func resume() { control?.resume() }

    func stop() -> UInt16 {
        guard let c = control else { return 0 }
        let avail = c.stop()
        worker = nil
        control = nil
        return avail
    }

    var currentAvailIndex: UInt16 { control?.currentAvailIndex ?? 0 }
    var needsReset: Bool { control?.needsReset ?? false }
}
