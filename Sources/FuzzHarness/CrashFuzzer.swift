import BlockBackends
@_spi(Fuzzing) import BlockEngine
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim

/// Fuzz target "crash" (issue 14): the input drives a simulated driver
/// (requests of every size and kind, kicks, batches), the disk (which held
/// ops finish, in which order) and the daemon's death: between two passes,
/// before a publish, or inside one after any number of in-flight-log stores
/// (`crashBeforeNextPublish` / `crashDuringNextPublish(afterLogStores:)`),
/// and again right after a recovery. After each death the queue is rebuilt
/// from the in-flight log and the ring exactly as adoption does
/// (`InflightQueueLog.recover`, then a worker resuming at its avail index
/// with the heads to resubmit), and the harness checks:
///
/// - every used entry the driver reads names a head it really had in
///   flight, and no request completes twice or with a bad status;
/// - after each recovery, the heads to resubmit plus the avail entries not
///   yet consumed are exactly the driver's outstanding requests (none lost,
///   none invented, none twice), and recovering twice gives the same answer;
/// - at the end every request completed once and every write is on the disk.
public enum CrashFuzzer {
    static let logger: Logger = {
        var l = Logger(label: "fuzz-crash")
        l.logLevel = .critical
        return l
    }()

    /// FUZZ_TRACE=1: print each operation (for reading a finding).
    static let trace = getenv("FUZZ_TRACE") != nil

    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let rig = Rig(&input)
        rig.run(&input)
    }

    final class Rig {
        enum Kind { case read, write, flush }
        struct Request {
            var id: Int
            var sim: SimBlkRequest
            var kind: Kind
        }

        static let memoryBytes: UInt64 = 1 << 20
        static let maxRequests = 600

        let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: Rig.memoryBytes)
        let driver: SimulatedDriver
        let builder: BlkRequestBuilder
        let sink = CountingInterruptSink(queues: 1)
        let parameters: BlkDeviceParameters
        let features: UInt64
        let size: UInt16
        let region: UnsafeMutableRawPointer
        let log: InflightQueueLog
        let disk = HeldDisk()
        var worker: QueueWorker<SimulatedGuestMemory>?
        var backend: HeldQueueBackend?
        /// Requests the driver made available and has not seen used, by head.
        var outstanding: [UInt16: Request] = [:]
        var completed = Set<Int>()
        var writes: [Int: (offset: UInt64, bytes: [UInt8])] = [:]
        var nextID = 0
        var crashes = 0

        init(_ input: inout FuzzInput) {
            let c0 = input.u8()
            // 4...64: a chain (header, up to two data buffers, status) never exceeds the ring.
            size = UInt16(1) << UInt16(2 + Int(c0 & 7) % 5)
            driver = SimulatedDriver(memory: memory, size: size, eventIdx: c0 & 0x08 != 0)
            builder = BlkRequestBuilder(driver: driver, indirect: c0 & 0x10 != 0)
            parameters = BlkDeviceParameters(capacityBytes: 64 << 20, readOnly: false, serial: "crash",
                                             numQueues: 1, queueSize: size, discard: false, writeZeroes: false)
            var f = parameters.offeredFeatures
            if c0 & 0x08 == 0 { f &= ~VirtioFeature.ringEventIdx }
            features = f
            let bytes = InflightQueueLog.regionBytes(maxQueueSize: size)
            region = .allocate(byteCount: bytes, alignment: 4096)
            region.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)  // garbage before begin
            log = InflightQueueLog(base: region, maxQueueSize: size)
            log.begin(queueIndex: 0, addresses: driver.addresses, startAvail: 0, usedIdx: 0)
            startWorker(startAvail: 0, resubmit: [], nextSeq: 1)
        }

        deinit {
            worker = nil
            region.deallocate()
        }

        func startWorker(startAvail: UInt16, resubmit: [UInt16], nextSeq: UInt64) {
            let b = HeldQueueBackend(disk: disk, depth: Int(size))
            backend = b
            worker = try! QueueWorker(
                config: QueueWorkerConfig(queueIndex: 0, addresses: driver.addresses, features: features,
                                          startAvail: startAvail, log: log, resubmit: resubmit, nextSeq: nextSeq),
                memory: memory, backend: b, parameters: parameters, sink: sink, kickFD: driver.kickFD,
                logger: CrashFuzzer.logger)
            worker!.openQueueSynchronously()
        }

        func run(_ input: inout FuzzInput) {
            var ops = 0
            while !input.isAtEnd && ops < 160 {
                ops += 1
                let op = input.below(12)
                if CrashFuzzer.trace { print("op \(op): outstanding \(outstanding.count), held \(backend!.heldCount)") }
                switch op {
                case 0, 1: addRequests(&input)
                case 2, 3: pass()
                case 4, 5: release(&input)
                case 6: collect()
                case 7:  // dies between two passes
                    kill(&input)
                case 8:  // dies at the next publish, before used.idx is stored
                    worker!.crashBeforeNextPublish()
                    release(&input)
                    pass()
                    kill(&input)
                case 9:  // dies inside the next publish, after some log stores
                    worker!.crashDuringNextPublish(afterLogStores: input.below(2 * Int(size) + 3))
                    release(&input)
                    pass()
                    kill(&input)
                case 10:  // consumes a batch and dies before any of it completes
                    pass()
                    kill(&input)
                default:  // dies again right after a recovery, before serving anything
                    kill(&input)
                    kill(&input)
                }
            }
            drain()
        }

        // MARK: - the driver

        func addRequests(_ input: inout FuzzInput) {
            let n = 1 + input.below(8)
            for _ in 0..<n {
                // Every request reads the same bytes whether or not it fits (so seeds stay readable).
                let kindByte = input.below(5)
                let segments = 1 + input.below(2)
                let extra = kindByte == 4 ? 0 : input.below(64)
                guard nextID < Rig.maxRequests, memory.allocationMark() + 16 << 10 < Rig.memoryBytes else { continue }
                let r: SimBlkRequest?
                let kind: Kind
                switch kindByte {
                case 0, 1, 2:
                    kind = .write
                    let length = 512 * (1 + extra % 2)
                    let seed = UInt8(truncatingIfNeeded: nextID)
                    let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed ^ UInt8(truncatingIfNeeded: nextID >> 8) }
                    let sector = UInt64(nextID) * 2
                    r = builder.write(sector: sector, bytes: bytes, segments: segments)
                    if r != nil { writes[nextID] = (sector * 512, bytes) }
                case 3:
                    kind = .read
                    r = builder.read(sector: UInt64(extra) * 2, length: 512, segments: segments)
                default:
                    kind = .flush
                    r = builder.bare(type: BlkRequestType.flush)
                }
                guard let r else { continue }  // ring full
                fuzzCheck(outstanding[r.head] == nil, "driver reused head \(r.head) while outstanding")
                outstanding[r.head] = Request(id: nextID, sim: r, kind: kind)
                nextID += 1
            }
            if input.bool() { driver.kick() }
        }

        /// Reads the used ring: each entry must answer a request in flight, once, with status OK.
        func collect() {
            for u in driver.collectUsed() {
                guard let req = outstanding.removeValue(forKey: u.head) else {
                    fuzzCheck(false, "used entry for head \(u.head), which was not in flight")
                    return
                }
                fuzzCheck(!completed.contains(req.id), "request \(req.id) completed twice")
                completed.insert(req.id)
                fuzzCheck(builder.statusByte(req.sim) == BlkStatus.ok,
                          "request \(req.id) (head \(u.head)) status \(builder.statusByte(req.sim))")
                if req.kind == .read {
                    fuzzCheck(u.length == req.sim.dataLength + 1, "read \(req.id) used length \(u.length)")
                }
            }
        }

        // MARK: - the device

        func pass() {
            _ = worker!.serviceOnceSynchronously()
            fuzzCheck(!worker!.control.needsReset, "the queue gave up (NEEDS_RESET) on well-formed requests")
        }

        /// The disk finishes some held ops, in an order the input picks.
        func release(_ input: inout FuzzInput) {
            guard let b = backend else { return }
            b.release(input.below(b.heldCount + 1), pick: { input.below($0) })
        }

        /// SIGKILL: the worker vanishes; of the ops it had submitted, some
        /// reached the disk (never reaped) and the rest never ran. Then the
        /// queue is adopted from the log, exactly as `DeviceController` does.
        func kill(_ input: inout FuzzInput) {
            if let b = backend {
                b.release(input.below(b.heldCount + 1), pick: { input.below($0) })
            }
            worker = nil
            backend = nil
            crashes += 1
            collect()
            let r1: InflightQueueLog.Recovery?
            let r2: InflightQueueLog.Recovery?
            do throws(InflightLogError) {
                r1 = try log.recover(queueIndex: 0, addresses: driver.addresses, memory: memory)
                r2 = try log.recover(queueIndex: 0, addresses: driver.addresses, memory: memory)
            } catch {
                fuzzCheck(false, "a log the worker wrote cannot be recovered: \(error)")
                return
            }
            guard let r = r1, let again = r2 else {
                fuzzCheck(false, "recovery found no queue in a begun log")
                return
            }
            fuzzCheck(again.resubmit == r.resubmit && again.startAvail == r.startAvail && again.nextSeq == r.nextSeq
                          && again.reconciled == 0,
                      "recovery is not idempotent: \(r) then \(again)")
            if CrashFuzzer.trace {
                print("  crash \(crashes): used \(driver.usedIndex), recovered \(r), outstanding \(outstanding.keys.sorted())")
            }
            checkRecovered(r)
            startWorker(startAvail: r.startAvail, resubmit: r.resubmit, nextSeq: r.nextSeq)
        }

        /// What recovery will serve (the heads to resubmit, then the avail
        /// entries from `startAvail` to the driver's avail index) must be the
        /// driver's outstanding requests, each exactly once.
        func checkRecovered(_ r: InflightQueueLog.Recovery) {
            let avail = memory.pointer(driver.addresses.availRing)
            let availIdx = UInt16(littleEndian: avail.load(fromByteOffset: 2, as: UInt16.self))
            let pending = availIdx &- r.startAvail
            fuzzCheck(pending <= size, "recovered avail index \(r.startAvail) is \(pending) behind the driver's \(availIdx)")
            var heads = r.resubmit
            for i in 0..<pending {
                let slot = Int((r.startAvail &+ i) & (size - 1))
                heads.append(UInt16(littleEndian: avail.load(fromByteOffset: 4 + 2 * slot, as: UInt16.self)))
            }
            let unique = Set(heads)
            fuzzCheck(unique.count == heads.count, "recovery would serve a head twice: \(heads)")
            let lost = Set(outstanding.keys).subtracting(unique)
            fuzzCheck(lost.isEmpty, "requests lost across the crash: heads \(lost.sorted()) (recovered \(r))")
            let invented = unique.subtracting(outstanding.keys)
            fuzzCheck(invented.isEmpty, "recovery resubmits heads the driver does not have in flight: \(invented.sorted())")
        }

        /// Serves everything to the end with a worker that does not die.
        func drain() {
            for _ in 0..<64 where !outstanding.isEmpty {
                pass()
                backend!.release(backend!.heldCount, pick: { _ in 0 })
                pass()
                collect()
            }
            fuzzCheck(outstanding.isEmpty, "requests never completed: \(outstanding.values.map(\.id).sorted())")
            fuzzCheck(completed.count == nextID, "\(completed.count) of \(nextID) requests completed")
            for (id, w) in writes {
                fuzzCheck(disk.blocks[w.offset] == w.bytes, "write \(id) is not on the disk")
            }
        }
    }
}
