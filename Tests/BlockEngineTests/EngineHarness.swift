import BlockBackends
import BlockEngine
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// Real queue workers driven by simulated drivers over simulated guest memory.
final class EngineHarness {
    let memory: SimulatedGuestMemory
    let drivers: [SimulatedDriver]
    let builders: [BlkRequestBuilder]
    let sink: CountingInterruptSink
    let parameters: BlkDeviceParameters
    var workers: [QueueWorker<SimulatedGuestMemory>] = []

    init(backend: any BlockBackendFactory, queues: Int = 1, queueSize: UInt16 = 64, eventIdx: Bool = true,
         indirectFeature: Bool = true, indirectChains: Bool = false, readOnly: Bool = false,
         serial: String = "sim-serial-0001", ringWait: Bool = false, startWorkers: Bool = true,
         liveCapacity: LiveCapacity? = nil) throws {
        memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 64 << 20)
        var ds: [SimulatedDriver] = []
        for _ in 0..<queues { ds.append(SimulatedDriver(memory: memory, size: queueSize, eventIdx: eventIdx)) }
        drivers = ds
        builders = ds.map { BlkRequestBuilder(driver: $0, indirect: indirectChains) }
        sink = CountingInterruptSink(queues: queues)
        let g = backend.geometry
        var p = BlkDeviceParameters(capacityBytes: g.capacityBytes, readOnly: readOnly || g.readOnly,
                                    serial: serial, numQueues: UInt16(queues), queueSize: queueSize,
                                    discard: g.supportsDiscard, writeZeroes: g.supportsWriteZeroes)
        p.liveCapacity = liveCapacity
        parameters = p
        var features = parameters.offeredFeatures
        if !eventIdx { features &= ~VirtioFeature.ringEventIdx }
        if !indirectFeature { features &= ~VirtioFeature.ringIndirectDesc }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        for q in 0..<queues {
            let w = try QueueWorker(
                config: QueueWorkerConfig(queueIndex: q, addresses: ds[q].addresses, features: features, ringWait: ringWait),
                memory: memory, backend: try backend.makeQueueBackend(queueIndex: q, depth: Int(queueSize)),
                parameters: parameters, sink: sink, kickFD: ds[q].kickFD, logger: logger)
            workers.append(w)
        }
        if startWorkers { for w in workers { w.start() } }
    }

    func stop() { for w in workers { w.control.stop() } }

    /// Kicks queue `q` and waits for `count` used entries.
    func complete(_ q: Int = 0, count: Int = 1, timeoutMs: Int = 5000) -> [SimUsed] {
        drivers[q].kick(force: true)
        return drivers[q].waitUsed(count: count, timeoutMs: timeoutMs)
    }

    /// Runs one request to completion and returns its status byte and used length.
    func run(_ q: Int = 0, _ make: (BlkRequestBuilder) -> SimBlkRequest?) -> (status: UInt8, used: SimUsed?, request: SimBlkRequest?) {
        guard let r = make(builders[q]) else { return (0xff, nil, nil) }
        let used = complete(q)
        return (builders[q].statusByte(r), used.first, r)
    }

    /// Waits until the worker of queue `q` reports NEEDS_RESET.
    func waitNeedsReset(_ q: Int = 0, timeoutMs: Int = 3000) -> Bool {
        drivers[q].kick(force: true)
        for _ in 0..<(timeoutMs / 5) {
            if workers[q].control.needsReset { return true }
            usleep(5000)
        }
        return workers[q].control.needsReset
    }
}

func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ ($0 >> 9)) }
}
