import BlockBackends
import CVDUSE
import Glibc
import Logging
import VDUSEBlk
import VDUSEDevice
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// A `DeviceTransport` over simulated drivers: what VDUSE ioctls would report.
final class SimulatedTransport: DeviceTransport, @unchecked Sendable {
    let memory: SimulatedGuestMemory
    let drivers: [SimulatedDriver]
    let sink: CountingInterruptSink
    var features: UInt64
    var ready: [Bool]
    var kickFDs: [Int32: Int32] = [:]
    var invalidations: [(UInt64, UInt64)] = []
    var interruptSink: any InterruptSink { sink }
    /// What `userBounceState()` reports next (the last one sticks).
    var bounceStates: [UserBounceState] = [.unsupported("simulated")]
    var registeredBounce: UInt64?

    init(queues: Int, size: UInt16, features: UInt64) {
        let m = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 16 << 20)
        memory = m
        drivers = (0..<queues).map { _ in SimulatedDriver(memory: m, size: size) }
        sink = CountingInterruptSink(queues: queues)
        self.features = features
        ready = [Bool](repeating: true, count: queues)
    }

    func negotiatedFeatures() throws(VDUSEError) -> UInt64 { features }
    func queueInfo(_ index: Int) throws(VDUSEError) -> QueueInfo {
        guard index < drivers.count else { throw .ioctl(what: "VQ_GET_INFO", errno: EINVAL) }
        // Resume where the device left off (the driver saw every request completed).
        return QueueInfo(addresses: drivers[index].addresses, availIndex: drivers[index].usedIndex, ready: ready[index])
    }
    func attachKickFD(queue: Int, fd: Int32) throws(VDUSEError) { kickFDs[Int32(queue)] = fd }
    func detachKickFD(queue: Int) { kickFDs[Int32(queue)] = nil }
    func makeMemory(queue: Int) -> SimulatedGuestMemory { memory }
    func invalidate(_ memory: SimulatedGuestMemory, start: UInt64, last: UInt64) { invalidations.append((start, last)) }
    func userBounceState() -> UserBounceState {
        if registeredBounce != nil { return .registered }
        return bounceStates.count > 1 ? bounceStates.removeFirst() : bounceStates[0]
    }
    func registerUserBounce(bytes: UInt64) throws(VDUSEError) {
        registeredBounce = bytes
    }

    /// The driver's kick reaches the device through the fd the controller attached.
    func kick(_ q: Int) {
        var one: UInt64 = 1
        _ = write(kickFDs[Int32(q)]!, &one, 8)
    }
}

/// The control-message handler: lifecycle of queue workers driven by status
/// changes, IOTLB updates while I/O runs, vq state, unknown requests.
final class ControllerTests: XCTestCase {
    func make(queues: Int = 2) throws -> (DeviceController<SimulatedTransport>, SimulatedTransport, MemoryBackendFactory) {
        let backend = try MemoryBackendFactory(capacityBytes: 4 << 20)
        let (c, t) = try make(queues: queues, backend: backend)
        return (c, t, backend)
    }

    func make(queues: Int, backend: any BlockBackendFactory,
              ringWait: Bool = false) throws -> (DeviceController<SimulatedTransport>, SimulatedTransport) {
        let params = BlkDeviceParameters(capacityBytes: 4 << 20, numQueues: UInt16(queues), queueSize: 32)
        let t = SimulatedTransport(queues: queues, size: 32, features: params.offeredFeatures)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let model = VirtioBlkDeviceModel(parameters: params, backend: backend, ringWait: ringWait, logger: logger)
        let c = try DeviceController(transport: t, model: model, logger: logger)
        return (c, t)
    }

    /// io_uring backends wait in the ring (kick and wake fds read there): reset and
    /// restart must hand the same backend handle to a new worker without losing
    /// kicks or hanging the stop.
    func testResetAndRestartWithRingWaitingBackend() throws {
        var tmpl = Array("/tmp/vduse-blk-ctl.XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&tmpl))
        defer { _ = system("rm -rf '\(dir)'") }
        let backend = try FileBackendFactory(path: "\(dir)/d.img", size: 4 << 20, engine: .uring)
        let (c, t) = try make(queues: 2, backend: backend, ringWait: true)
        let b = BlkRequestBuilder(driver: t.drivers[0])
        var expectedAvail: UInt16 = 0
        for cycle in 0..<3 {
            _ = c.handle(.setStatus(requestID: 1, status: 0x0f))
            XCTAssertEqual(c.runningQueues, 2)
            for i in 0..<5 {
                let data = pattern(4096, seed: UInt8(cycle * 10 + i))
                let w = b.write(sector: UInt64(i * 8), bytes: data)!
                t.kick(0)
                XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1, "cycle \(cycle) write \(i)")
                XCTAssertEqual(b.statusByte(w), BlkStatus.ok)
                let r = b.read(sector: UInt64(i * 8), length: 4096)!
                t.kick(0)
                XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1)
                XCTAssertEqual(b.data(r), data)
                expectedAvail &+= 2
            }
            // An IOTLB update (pause/resume through the wake fd read in the ring).
            XCTAssertTrue(c.handle(.updateIOTLB(requestID: 2, start: 0, last: .max)).ok)
            _ = c.handle(.setStatus(requestID: 3, status: 0))
            XCTAssertEqual(c.runningQueues, 0)
            XCTAssertEqual(c.handle(.getVQState(requestID: 4, queue: 0)).vqState?.availIndex, expectedAvail)
            // The simulated driver keeps its ring across the reset, as if re-negotiated at the same place.
        }
    }

    func testDriverOKStartsQueuesAndResetStopsThem() throws {
        let (c, t, backend) = try make()
        t.ready[1] = false
        XCTAssertEqual(c.handle(.setStatus(requestID: 1, status: 0x0b)), ControlResponse(requestID: 1, ok: true))
        XCTAssertEqual(c.runningQueues, 0, "FEATURES_OK alone starts nothing")
        XCTAssertEqual(c.handle(.setStatus(requestID: 2, status: 0x0f)), ControlResponse(requestID: 2, ok: true))
        XCTAssertEqual(c.runningQueues, 1, "only the ready queue runs")
        XCTAssertEqual(c.negotiatedFeatures, t.features)

        let b = BlkRequestBuilder(driver: t.drivers[0])
        let data = pattern(4096, seed: 11)
        let w = b.write(sector: 8, bytes: data)!
        t.kick(0)
        XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1)
        XCTAssertEqual(b.statusByte(w), BlkStatus.ok)
        XCTAssertEqual(backend.bytes(at: 8 * 512, count: 4096), data)

        // Reset: workers stop, kick fds detached, GET_VQ_STATE reports where the queue stopped.
        XCTAssertEqual(c.handle(.setStatus(requestID: 3, status: 0)), ControlResponse(requestID: 3, ok: true))
        XCTAssertEqual(c.runningQueues, 0)
        XCTAssertTrue(t.kickFDs.isEmpty)
        XCTAssertEqual(c.handle(.getVQState(requestID: 4, queue: 0)),
                       ControlResponse(requestID: 4, ok: true, vqState: (0, 1)))
        XCTAssertEqual(c.handle(.getVQState(requestID: 5, queue: 7)), ControlResponse(requestID: 5, ok: false))
    }

    func testIOTLBUpdateWhileIOIsRunningPausesAndResumes() throws {
        let (c, t, _) = try make()
        _ = c.handle(.setStatus(requestID: 1, status: 0x0f))
        XCTAssertEqual(c.runningQueues, 2)
        let b = BlkRequestBuilder(driver: t.drivers[1])
        var total = 0
        for round in 0..<20 {
            for i in 0..<8 { _ = b.write(sector: UInt64(i * 8), bytes: pattern(4096, seed: UInt8(round))) }
            t.kick(1)
            XCTAssertEqual(c.handle(.updateIOTLB(requestID: UInt32(10 + round), start: 0, last: 0xffff_ffff)),
                           ControlResponse(requestID: UInt32(10 + round), ok: true))
            total += t.drivers[1].waitUsed(count: 8).count
        }
        XCTAssertEqual(total, 160)
        XCTAssertEqual(t.invalidations.count, 40, "each running queue invalidated once per update")
        XCTAssertEqual(c.handle(.updateIOTLB(requestID: 99, start: 5, last: 4)), ControlResponse(requestID: 99, ok: false))
        XCTAssertEqual(c.handle(.getVQState(requestID: 100, queue: 1)),
                       ControlResponse(requestID: 100, ok: true, vqState: (1, 160)))
        _ = c.handle(.setStatus(requestID: 2, status: 0))
    }

    func testUnknownRequestsAreAnsweredFailed() throws {
        let (c, _, _) = try make()
        XCTAssertEqual(c.handle(.unknown(requestID: 7, type: 3)), ControlResponse(requestID: 7, ok: false))
        XCTAssertEqual(c.handle(.unknown(requestID: 8, type: .max)), ControlResponse(requestID: 8, ok: false))
    }

    func testControlMessageDecodingAndEncoding() {
        var req = vb_vduse_dev_request()
        req.type = UInt32(VB_VDUSE_UPDATE_IOTLB.rawValue)
        req.request_id = 42
        req.iova.start = 0x1000
        req.iova.last = 0x1fff
        let decoded = withUnsafeBytes(of: &req) { ControlMessage.decode($0) }
        XCTAssertEqual(decoded, .updateIOTLB(requestID: 42, start: 0x1000, last: 0x1fff))
        req.type = UInt32(VB_VDUSE_SET_STATUS.rawValue)
        req.s.status = 0x0f
        XCTAssertEqual(withUnsafeBytes(of: &req) { ControlMessage.decode($0) }, .setStatus(requestID: 42, status: 0x0f))
        req.type = 77
        XCTAssertEqual(withUnsafeBytes(of: &req) { ControlMessage.decode($0) }, .unknown(requestID: 42, type: 77))
        // A short read is not a message.
        XCTAssertNil(withUnsafeBytes(of: &req) { ControlMessage.decode(UnsafeRawBufferPointer(rebasing: $0[0..<20])) })
        let resp = ControlResponse(requestID: 9, ok: true, vqState: (3, 1234)).encode()
        XCTAssertEqual(resp.request_id, 9)
        XCTAssertEqual(resp.result, UInt32(VB_VDUSE_REQ_RESULT_OK))
        XCTAssertEqual(resp.vq_state.index, 3)
        XCTAssertEqual(resp.vq_state.split.avail_index, 1234)
        XCTAssertEqual(MemoryLayout<vb_vduse_dev_response>.size, 152)
        XCTAssertEqual(ControlResponse(requestID: 1, ok: false).encode().result, UInt32(VB_VDUSE_REQ_RESULT_FAILED))
    }

    /// `--bounce user`: the controller waits (on a timer) until the kernel has a
    /// bounce region, then registers daemon pages, invalidates every running
    /// queue's view, and I/O goes on (the workers resumed); a reset stops the
    /// waiting. (That the pages are registered with no I/O in flight is the
    /// pause protocol's job, tested with IOTLB updates above and in the guest.)
    func testUserBounceIsAdoptedOnceTheBounceRegionExists() throws {
        let params = BlkDeviceParameters(capacityBytes: 4 << 20, numQueues: 2, queueSize: 32)
        let t = SimulatedTransport(queues: 2, size: 32, features: params.offeredFeatures)
        t.bounceStates = [.notYet, .notYet, .ready(bytes: 64 << 20)]
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let model = VirtioBlkDeviceModel(parameters: params, backend: try MemoryBackendFactory(capacityBytes: 4 << 20),
                                         logger: logger)
        let c = try DeviceController(transport: t, model: model, userBounce: true, logger: logger)
        XCTAssertEqual(c.retryAfterMillis, -1, "nothing to retry before DRIVER_OK")
        _ = c.handle(.setStatus(requestID: 1, status: 0x0f))
        XCTAssertEqual(c.runningQueues, 2)
        XCTAssertEqual(c.retryAfterMillis, 20, "no bounce region yet: retry on a timer")
        XCTAssertNil(t.registeredBounce)

        // I/O in flight while the control thread retries.
        let b = BlkRequestBuilder(driver: t.drivers[0])
        let data = pattern(4096, seed: 5)
        let w = b.write(sector: 16, bytes: data)!
        t.kick(0)
        c.retryPending()                       // still .notYet
        XCTAssertNil(t.registeredBounce)
        XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1)
        XCTAssertEqual(b.statusByte(w), BlkStatus.ok)
        t.invalidations.removeAll()
        c.retryPending()                       // .ready: registered
        XCTAssertEqual(t.registeredBounce, 64 << 20)
        XCTAssertEqual(t.invalidations.count, 2, "every running queue's view is invalidated")
        XCTAssertTrue(t.invalidations.allSatisfy { $0.0 == 0 && $0.1 == .max })
        XCTAssertEqual(c.retryAfterMillis, -1)

        // The workers resumed: I/O goes on.
        let r = b.read(sector: 16, length: 4096)!
        t.kick(0)
        XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1)
        XCTAssertEqual(b.data(r), data)

        // A reset before the region appears stops the retries.
        let t2 = SimulatedTransport(queues: 1, size: 32, features: params.offeredFeatures)
        t2.bounceStates = [.notYet]
        let model2 = VirtioBlkDeviceModel(parameters: params, backend: try MemoryBackendFactory(capacityBytes: 4 << 20),
                                          logger: logger)
        let c2 = try DeviceController(transport: t2, model: model2, userBounce: true, logger: logger)
        _ = c2.handle(.setStatus(requestID: 1, status: 0x0f))
        XCTAssertEqual(c2.retryAfterMillis, 20)
        _ = c2.handle(.setStatus(requestID: 2, status: 0))
        XCTAssertEqual(c2.retryAfterMillis, -1)
        // A region that never appears (vhost-vdpa without IOVA 0, a driver doing no I/O): given up after a minute's worth of checks.
        _ = c2.handle(.setStatus(requestID: 5, status: 0x0f))
        var checks = 1
        while c2.retryAfterMillis > 0 && checks < 10_000 {
            c2.retryPending()
            checks += 1
        }
        XCTAssertEqual(checks, UserBounceAdoption.maxChecks)
        XCTAssertNil(t2.registeredBounce)
        _ = c2.handle(.setStatus(requestID: 6, status: 0))
        // Unsupported (vhost-vdpa, old kernel): a warning, no retries.
        t2.bounceStates = [.unsupported("simulated")]
        _ = c2.handle(.setStatus(requestID: 3, status: 0x0f))
        XCTAssertEqual(c2.retryAfterMillis, -1)
        XCTAssertNil(t2.registeredBounce)
    }

    /// Device names become file names (/dev/vduse/NAME, /run/vduse-blk/NAME.stats):
    /// one plain name of [A-Za-z0-9._-], never a path, "." / ".." or "control".
    func testDeviceNamesThatCouldEscapeTheirDirectoryAreRejected() {
        for bad in ["", "a/b", "../x", "/etc/passwd", ".", "..", "control", "x y", "dev\n", "é",
                    String(repeating: "a", count: 64)] {
            XCTAssertThrowsError(try VDUSEControl.validate(name: bad), "'\(bad)' accepted") { e in
                XCTAssertEqual(e as? VDUSEError, .badName(bad))
            }
        }
        for good in ["vdb0", "my.disk-1_x", "...", String(repeating: "a", count: 63)] {
            XCTAssertNoThrow(try VDUSEControl.validate(name: good), "'\(good)' rejected")
        }
    }
}
