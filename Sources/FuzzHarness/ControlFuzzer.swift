import SystemSupport
import BlockBackends
import BlockEngine
import CSys
import CVDUSE
import Glibc
import Logging
import Synchronization
import VDUSEBlk
import VDUSEDevice
import VirtioBlk
import VirtioCore
import VirtioDriverSim

/// Fuzz target "control": the input is a sequence of `vduse_dev_request`
/// blobs (status changes, IOTLB updates, GET_VQ_STATE, unknown types, short
/// reads), decoded with `ControlMessage.decode` and answered by a real
/// `DeviceController` serving the real virtio-blk model (`VirtioBlkDeviceModel`),
/// whose real queue workers run on threads against a fake
/// transport, interleaved with driver I/O, kernel-side IOTLB unmaps and
/// failing transport calls. Checks:
///
/// - a blob of the wrong size decodes to nil (the control loop then sends
///   nothing); every other blob decodes, and its answer carries the same
///   request_id and result OK (0) or FAILED (1), reserved bytes zero; the
///   result is the one the message calls for (GET_VQ_STATE of a queue that
///   exists, SET_STATUS, a well-formed IOTLB range: OK; the rest FAILED);
/// - every request made available on a running, healthy queue is completed
///   (all used entries come back) before the final reset;
/// - no crash, no deadlock (libFuzzer's -timeout catches a hang).
public enum ControlFuzzer {
    static let requestSize = MemoryLayout<vb_vduse_dev_request>.size
    static let memoryIOVA: UInt64 = 0x1_0000_0000
    static let memorySize: UInt64 = 256 << 10

    static let logger: Logger = {
        var l = Logger(label: "fuzz-control")
        l.logLevel = .critical
        return l
    }()

    /// Made once and reused by every input (what the disk holds does not
    /// steer the control paths): each input used to pay for a 1 MiB disk
    /// and 256 KiB of guest memory.
    static let writableBackend = try! MemoryBackendFactory(capacityBytes: 1 << 20, readOnly: false)
    static let readOnlyBackend = try! MemoryBackendFactory(capacityBytes: 1 << 20, readOnly: true)
    static let guestMemory = SimulatedGuestMemory(iova: memoryIOVA, size: memorySize)

    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let c0 = input.u8()
        let c1 = input.u8()
        let numQueues = 1 + Int(c0 & 3)
        let maxSize = UInt16(4) << UInt16((c0 >> 2) & 3)                  // 4...32
        let readOnly = c0 & 0x10 != 0
        let backend = readOnly ? readOnlyBackend : writableBackend
        let parameters = BlkDeviceParameters(capacityBytes: 1 << 20, readOnly: readOnly, serial: "fuzz",
                                             numQueues: UInt16(numQueues), queueSize: maxSize,
                                             discard: !readOnly, writeZeroes: !readOnly)
        var features = parameters.offeredFeatures
        if c1 & 1 != 0 { features &= ~VirtioFeature.ringEventIdx }
        if c1 & 2 != 0 { features &= ~VirtioFeature.ringIndirectDesc }
        var sizes: [UInt16] = []
        for q in 0..<numQueues {
            let s = input.u8()
            // Mostly what the device allows; sometimes larger, or not a power of two.
            sizes.append(s & 0x80 != 0 ? UInt16(s & 0x7f) | 1 : min(UInt16(1) << UInt16(s & 7), maxSize << (s >> 6 & 1)))
            _ = q
        }
        let transport = FuzzTransport(sizes: sizes, features: features, readyMask: ~input.u8() | 1)
        let model = VirtioBlkDeviceModel(parameters: parameters, backend: backend, logger: logger)
        let controller = try! DeviceController(transport: transport, model: model, logger: logger)
        var ops = 0
        var requestID: UInt32 = 1
        while !input.isAtEnd, ops < 48 {
            ops += 1
            switch input.u8() % 8 {
            case 0, 1:
                let statuses: [UInt8] = [0, 0x0f, 0x0b, 0x0f, 0x4f, 0x8f, 0x07, 0x03]
                let v = input.u8()
                send(controller, transport, type: VB_VDUSE_SET_STATUS.rawValue, id: requestID) {
                    $0.s.status = v & 0x80 != 0 ? input.u8() : statuses[Int(v) % statuses.count]
                }
            case 2:
                let v = input.u8()
                send(controller, transport, type: VB_VDUSE_GET_VQ_STATE.rawValue, id: requestID) {
                    $0.vq_state.index = v & 0x80 != 0 ? input.u32() : UInt32(v) % UInt32(numQueues + 1)
                }
            case 3:
                // Kernel-side change first (unmap a range / map everything back), then the message.
                let v = input.u8()
                let (start, last) = range(&input)
                switch v % 4 {
                case 0: transport.kernelUnmap(start, last)
                case 1: transport.kernelMapAll()
                default: break
                }
                send(controller, transport, type: VB_VDUSE_UPDATE_IOTLB.rawValue, id: requestID) {
                    $0.iova.start = start
                    $0.iova.last = last
                }
            case 4:
                // Any request blob, of the right size or not.
                let n = input.u8()
                let size = n & 0xc0 == 0xc0 ? Int(n & 0x3f) * 4 : requestSize
                let bytes = input.take(size)
                deliver(bytes, controller, transport)
            case 5, 6:
                driverIO(&input, transport)
            default:
                transport.failures = input.u8()
            }
            requestID &+= 1
        }
        transport.failures = 0
        // Everything made available on a healthy running queue completes
        // (after a last kick: the driver may have held some back).
        for q in 0..<numQueues { transport.kick(q) }
        if !controller.needsReset {
            for q in 0..<numQueues where transport.isRunning(q) {
                let d = transport.drivers[q]
                let published = d.publishedAvail
                // Yield first (the worker usually needs microseconds), then
                // nap briefly, at most 40 000 naps (over 2 s). (A fixed
                // usleep(500) cost more than half a millisecond per input.)
                // Counted in naps, not on a clock: a fuzzer paused with
                // SIGSTOP must not find its deadline gone when it resumes.
                var spins = 0
                while d.usedIndex != published, !controller.needsReset, spins < 40_200 {
                    spins += 1
                    if spins < 200 { sched_yield() } else { usleep(50) }
                }
                fuzzCheck(d.usedIndex == published || controller.needsReset,
                          "queue \(q): \(published &- d.usedIndex) request(s) never completed")
            }
        }
        send(controller, transport, type: VB_VDUSE_SET_STATUS.rawValue, id: requestID) { $0.s.status = 0 }
        fuzzCheck(controller.runningQueues == 0, "workers still running after reset")
    }

    static func range(_ input: inout FuzzInput) -> (UInt64, UInt64) {
        switch input.u8() % 6 {
        case 0: return (0, .max)
        case 1: return (input.u64(), input.u64())
        case 2:
            let s = memoryIOVA + UInt64(input.u16()) * 16
            return (s, s + UInt64(input.u16()))
        case 3: return (memoryIOVA, memoryIOVA + memorySize - 1)
        case 4:
            let s = memoryIOVA + UInt64(input.u32()) % memorySize
            return (s, s &- UInt64(input.u8()))      // sometimes last < start
        default:
            let s = memoryIOVA + UInt64(input.u8()) * 4096
            return (s, s + 4095)
        }
    }

    static func send(_ c: DeviceController<FuzzTransport>, _ t: FuzzTransport, type: UInt32, id: UInt32,
                     _ fill: (inout vb_vduse_dev_request) -> Void) {
        var r = vb_vduse_dev_request()
        r.type = type
        r.request_id = id
        fill(&r)
        let bytes = withUnsafeBytes(of: &r) { Array($0) }
        deliver(bytes, c, t)
    }

    /// What the control loop does with one read: decode, answer, write back.
    static func deliver(_ bytes: [UInt8], _ c: DeviceController<FuzzTransport>, _ t: FuzzTransport) {
        let message = bytes.withUnsafeBytes { ControlMessage.decode($0) }
        guard bytes.count == requestSize else {
            fuzzCheck(message == nil, "a \(bytes.count)-byte read decoded as \(String(describing: message))")
            return
        }
        guard let message else { fuzzCheck(false, "a full-size request did not decode"); return }
        let raw = bytes.withUnsafeBytes { $0.loadUnaligned(as: vb_vduse_dev_request.self) }
        fuzzCheck(message.requestID == raw.request_id, "decoded request id differs")
        let response = c.handle(message)
        var encoded = response.encode()
        fuzzCheck(encoded.request_id == raw.request_id, "answer to request \(raw.request_id) has id \(encoded.request_id)")
        fuzzCheck(encoded.result == UInt32(VB_VDUSE_REQ_RESULT_OK) || encoded.result == UInt32(VB_VDUSE_REQ_RESULT_FAILED),
                  "result \(encoded.result)")
        withUnsafeBytes(of: &encoded.reserved) { r in fuzzCheck(r.allSatisfy { $0 == 0 }, "reserved bytes set") }
        let expectOK: Bool
        switch message {
        case .getVQState(_, let q):
            expectOK = Int(q) < t.drivers.count
            if expectOK { fuzzCheck(encoded.vq_state.index == q, "GET_VQ_STATE answered for another queue") }
        case .setStatus(_, let s):
            expectOK = true
            if s == 0 {
                fuzzCheck(c.runningQueues == 0, "reset left workers running")
                t.reinitializeDrivers()
            }
        case .updateIOTLB(_, let start, let last):
            expectOK = start <= last
        case .unknown:
            expectOK = false
        }
        fuzzCheck(response.ok == expectOK, "\(message) answered \(response.ok ? "OK" : "FAILED")")
    }

    /// A few requests on one queue, then a kick when the queue has a kick fd.
    static func driverIO(_ input: inout FuzzInput, _ t: FuzzTransport) {
        let q = input.below(t.drivers.count)
        let d = t.drivers[q]
        let n = 1 + input.below(4)
        for _ in 0..<n {
            guard t.memory.allocationMark() + 16 << 10 <= memorySize, d.freeDescriptors >= 6 else { break }
            let b = BlkRequestBuilder(driver: d, indirect: input.u8() & 1 != 0 && t.features & VirtioFeature.ringIndirectDesc != 0)
            let sector = UInt64(input.u8()) * 8
            switch input.u8() % 5 {
            case 0: _ = b.read(sector: sector, length: UInt32(1 + input.below(8)) * 512, segments: 1 + input.below(3))
            case 1: _ = b.write(sector: sector, bytes: [UInt8](repeating: 0x5c, count: 4096), segments: 1 + input.below(3))
            case 2: _ = b.bare(type: BlkRequestType.flush)
            case 3: _ = b.getID()
            default: _ = b.range(type: BlkRequestType.writeZeroes, sector: sector, sectors: 8)
            }
        }
        if input.u8() & 3 != 0 { t.kick(q) }
    }
}

/// A `DeviceTransport` over simulated drivers whose IOVA space the fuzzer can
/// shrink: `kernelUnmap` models the kernel dropping a mapping, and a queue's
/// memory view picks the change up when the controller invalidates it (as
/// `IOTLBMemory` re-fetches lazily). Transport calls fail on demand.
final class FuzzTransport: DeviceTransport, @unchecked Sendable {
    let memory: SimulatedGuestMemory
    let sizes: [UInt16]
    let features: UInt64
    let readyMask: UInt8
    private(set) var drivers: [SimulatedDriver] = []
    let sink: CountingInterruptSink
    /// Kick fds attached per queue (a queue with one has a running worker).
    var kickFDs: [Int32?]
    /// IOVA ranges the "kernel" has no mapping for.
    var unmapped: [ClosedRange<UInt64>] = []
    /// Bit 0: negotiatedFeatures fails; 1: queueInfo fails; 2: attachKickFD fails (for queue 0 only when bit 3).
    var failures: UInt8 = 0
    var interruptSink: any InterruptSink { sink }

    init(sizes: [UInt16], features: UInt64, readyMask: UInt8) {
        memory = ControlFuzzer.guestMemory
        self.sizes = sizes
        self.features = features
        self.readyMask = readyMask
        sink = CountingInterruptSink(queues: sizes.count)
        kickFDs = [Int32?](repeating: nil, count: sizes.count)
        reinitializeDrivers()
    }

    /// After a reset the driver sets its rings up afresh. Only what was
    /// allocated since the last reset is cleared: the device writes nothing
    /// but the rings and request buffers (all allocated), and clearing all
    /// 256 KiB on every reset took a tenth of the samples in a profile.
    func reinitializeDrivers() {
        let used = memory.allocationMark()
        memory.release(to: 0)
        memset(memory.regions[0].base, 0, Int(used))
        drivers = sizes.map { SimulatedDriver(memory: memory, size: $0) }
    }

    func isRunning(_ q: Int) -> Bool { kickFDs[q] != nil }

    func kernelUnmap(_ start: UInt64, _ last: UInt64) {
        guard start <= last else { return }
        unmapped.append(start...last)
    }

    func kernelMapAll() { unmapped.removeAll() }

    func negotiatedFeatures() throws(VDUSEError) -> UInt64 {
        if failures & 1 != 0 { throw .ioctl(what: "VDUSE_DEV_GET_FEATURES", errno: EIO) }
        return features
    }

    func queueInfo(_ index: Int) throws(VDUSEError) -> QueueInfo {
        guard index < drivers.count else { throw .ioctl(what: "VQ_GET_INFO", errno: EINVAL) }
        if failures & 2 != 0, index == drivers.count - 1 { throw .ioctl(what: "VQ_GET_INFO", errno: EIO) }
        return QueueInfo(addresses: drivers[index].addresses, availIndex: 0, ready: readyMask & (1 << (index & 7)) != 0)
    }

    func attachKickFD(queue: Int, fd: Int32) throws(VDUSEError) {
        if failures & 4 != 0, queue == 0 || failures & 8 != 0 { throw .ioctl(what: "VQ_SETUP_KICKFD", errno: EIO) }
        kickFDs[queue] = fd
    }

    func detachKickFD(queue: Int) { kickFDs[queue] = nil }

    func makeMemory(queue: Int) -> HoleyMemory { HoleyMemory(memory, holes: unmapped) }

    func invalidate(_ view: HoleyMemory, start: UInt64, last: UInt64) {
        // The worker is paused or stopped: it is safe to change what it sees.
        view.holes = unmapped
    }

    func kick(_ q: Int) {
        guard let fd = kickFDs[q] else { return }
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }
}

/// Simulated memory minus the ranges the kernel unmapped (as of the last
/// invalidation). Touched by one worker thread, changed only while it is paused.
final class HoleyMemory: GuestMemory, @unchecked Sendable {
    let inner: SimulatedGuestMemory
    var holes: [ClosedRange<UInt64>]

    init(_ inner: SimulatedGuestMemory, holes: [ClosedRange<UInt64>]) {
        self.inner = inner
        self.holes = holes
    }

    func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan? {
        guard var span = inner.translate(address, length: length, write: write) else { return nil }
        for h in holes {
            if h.contains(address) { return nil }
            if h.lowerBound > address, h.lowerBound - address < span.length { span.length = h.lowerBound - address }
        }
        return span
    }
}

extension SimulatedDriver {
    /// avail.idx as last published.
    var publishedAvail: UInt16 {
        UInt16(littleEndian: vb_load_acquire_u16(memory.pointer(addresses.availRing + 2)))
    }
}
