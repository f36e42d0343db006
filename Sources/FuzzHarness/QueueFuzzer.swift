import SystemSupport
import BlockBackends
@_spi(Fuzzing) import BlockEngine
import CSys
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim

/// Fuzz target "queue": the input is a little program for a simulated driver
/// (ring configuration, then operations: well-formed requests with optional
/// corruptions, raw descriptors, indirect tables, avail-ring staging and index
/// jumps, raw memory pokes), interleaved with synchronous passes of the real
/// `QueueWorker` over the in-memory backend. After every pass it checks:
///
/// - every consumed head got exactly one used entry, or the queue entered
///   NEEDS_RESET, and NEEDS_RESET happens exactly when a reference walk of the
///   batch finds a fatal ring error (a duplicate head in flight may also do it);
/// - used lengths never exceed the chain's device-writable bytes;
/// - every status byte the device owes is 0, 1 or 2 (status bytes are poisoned
///   with 0xEE before the pass, so "never written" is caught too);
/// - guest memory changed only inside the chain's device-writable buffers and
///   the used ring (guest memory is filled with a canary pattern; a read-only
///   region must never change).
///
/// Out-of-bounds accesses are left to AddressSanitizer.
public enum QueueFuzzer {
    static let ramIOVA: UInt64 = 0x1_0000_0000
    static let ramSize: UInt64 = 32 << 10
    /// A read-only region right after the RAM, so buffers can straddle both.
    static let romIOVA: UInt64 = ramIOVA + ramSize
    static let romSize: UInt64 = 4096
    static let diskBytes: UInt64 = 64 << 10
    static let poison: UInt8 = 0xEE
    /// Canary contents of the RAM and of the read-only region.
    static let ramPattern: [UInt8] = (0..<Int(ramSize)).map { UInt8(truncatingIfNeeded: 0xA5 &+ $0 &* 13 &+ $0 >> 8) }
    static let romPattern: [UInt8] = (0..<Int(romSize)).map { UInt8(truncatingIfNeeded: 0x5A &+ $0 &* 7) }

    /// FUZZ_TRACE=1: print what every pass saw (for reading a finding).
    static let trace = getenv("FUZZ_TRACE") != nil

    static let logger: Logger = {
        var l = Logger(label: "fuzz-queue")
        l.logLevel = .critical
        return l
    }()

    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let session = Session(&input)
        session.run(&input)
    }

    final class Session {
        let memory: SimulatedGuestMemory
        let view: RecordingMemory
        let driver: SimulatedDriver
        let worker: QueueWorker<RecordingMemory>
        let sink: CountingInterruptSink
        let size: UInt16
        let indirectFeature: Bool
        let ram: UnsafeMutablePointer<UInt8>
        let rom: UnsafeMutablePointer<UInt8>
        let trackFreeList: Bool
        var usedSeen: UInt16
        var broken = false
        /// RAM then read-only region, as they were before the current pass.
        let snapshot: UnsafeMutablePointer<UInt8>
        var opsLeft = 96

        init(_ input: inout FuzzInput) {
            let c0 = input.u8()
            let c1 = input.u8()
            size = UInt16(1) << UInt16(c0 & 7 == 7 ? 6 : c0 & 7)          // 1...64
            let eventIdx = c0 & 0x08 != 0
            indirectFeature = c0 & 0x10 == 0
            let readOnly = c0 & 0x20 != 0
            let discard = c1 & 0x01 == 0
            let writeZeroes = c1 & 0x02 == 0
            // Device-wide maximum queue size (sets seg_max); the driver's ring is at most that.
            let maxSize = max(size, UInt16(2) << UInt16((c1 >> 2) & 7))
            let start: UInt16 = c1 & 0x20 == 0 ? 0 : input.u16()

            memory = SimulatedGuestMemory(iova: ramIOVA, size: ramSize)
            memory.addRegion(iova: romIOVA, size: romSize, writable: false)
            ram = memory.regions[0].base.assumingMemoryBound(to: UInt8.self)
            rom = memory.regions[1].base.assumingMemoryBound(to: UInt8.self)
            let (r0, r1) = (ram, rom)
            ramPattern.withUnsafeBytes { _ = memcpy(r0, $0.baseAddress!, Int(ramSize)) }
            romPattern.withUnsafeBytes { _ = memcpy(r1, $0.baseAddress!, Int(romSize)) }
            driver = SimulatedDriver(memory: memory, size: size, eventIdx: eventIdx)
            let a = driver.addresses
            memset(memory.pointer(a.descTable), 0, Int(SplitRingLayout.descTableBytes(size)))
            memset(memory.pointer(a.availRing), 0, Int(SplitRingLayout.availBytes(size)))
            memset(memory.pointer(a.usedRing), 0, Int(SplitRingLayout.usedBytes(size)))
            // Resume state: avail and used indices both at `start` (nothing in flight).
            if start != 0 {
                driver.forceAvailIndex(start)
                memory.pointer(a.usedRing + 2).storeBytes(of: start.littleEndian, as: UInt16.self)
            }
            trackFreeList = start == 0
            usedSeen = start

            view = RecordingMemory(memory)
            sink = CountingInterruptSink(queues: 1)
            let backend = try! MemoryBackendFactory(capacityBytes: diskBytes)
            let parameters = BlkDeviceParameters(capacityBytes: diskBytes, readOnly: readOnly, serial: "fuzz-serial",
                                                 numQueues: 1, queueSize: maxSize, discard: discard,
                                                 writeZeroes: writeZeroes)
            var features = parameters.offeredFeatures
            if !eventIdx { features &= ~VirtioFeature.ringEventIdx }
            if !indirectFeature { features &= ~VirtioFeature.ringIndirectDesc }
            worker = try! QueueWorker(
                config: QueueWorkerConfig(queueIndex: 0, addresses: a, features: features, startAvail: start),
                memory: view, backend: try! backend.makeQueueBackend(queueIndex: 0, depth: Int(size)),
                parameters: parameters, sink: sink, kickFD: driver.kickFD, logger: QueueFuzzer.logger)
            snapshot = .allocate(capacity: Int(ramSize + romSize))
            worker.openQueueSynchronously()
            broken = worker.control.needsReset
            fuzzCheck(!broken, "rings inside guest memory were refused")
        }

        deinit { snapshot.deallocate() }

        func run(_ input: inout FuzzInput) {
            while !input.isAtEnd, opsLeft > 0 {
                opsLeft -= 1
                switch input.u8() % 12 {
                case 0, 1, 2: request(&input)
                case 3: rawDescriptor(&input)
                case 4: driver.stage(head: anyHead(&input))
                case 5: driver.publish()
                case 6: driver.forceAvailIndex(driverAvail &+ UInt16(input.u8() % 4 == 0 ? input.u16() : UInt16(input.u8())))
                case 7: indirectTable(&input)
                case 8: service()
                case 9: poke(&input)
                case 10: driver.requestInterrupt(afterUsed: UInt16(input.u8()), suppress: input.bool())
                default: builderRequest(&input)
                }
            }
            service()
        }

        // MARK: driver side

        var driverAvail: UInt16 {
            UInt16(littleEndian: memory.pointer(driver.addresses.availRing + 2).load(as: UInt16.self))
        }

        func anyHead(_ input: inout FuzzInput) -> UInt16 {
            let v = input.u8()
            if v & 0xC0 == 0xC0 { return input.u16() }   // often out of range
            return UInt16(v) & (size - 1)
        }

        /// An address: mostly inside the RAM, sometimes near its end, in the
        /// read-only region, unmapped or wrapping.
        func address(_ input: inout FuzzInput) -> UInt64 {
            switch input.u8() % 16 {
            case 0: return ramIOVA + ramSize - UInt64(input.u8())
            case 1: return romIOVA + UInt64(input.u16()) % romSize
            case 2: return input.u64()
            case 3: return UInt64.max - UInt64(input.u8())
            case 4: return UInt64(input.u16())
            default: return ramIOVA + UInt64(input.u16()) % ramSize
            }
        }

        func length(_ input: inout FuzzInput) -> UInt32 {
            switch input.u8() % 8 {
            case 0: return 0
            case 1: return 1
            case 2: return 16
            case 3: return input.u32()
            case 4: return UInt32(input.u8())
            default: return UInt32(input.u8() % 9) * 512
            }
        }

        func allocate(_ bytes: UInt64, alignment: UInt64 = 16) -> UInt64? {
            let mark = memory.allocationMark()
            let start = (mark + alignment - 1) / alignment * alignment
            guard bytes > 0, start + bytes <= ramSize else { return nil }
            return memory.allocate(bytes, alignment: alignment)
        }

        func descriptorFits(_ index: UInt16, table: UInt64) -> Bool {
            let at = table &+ UInt64(index) * 16
            let u = driver.addresses.usedRing
            return at >= ramIOVA && at + 16 <= ramIOVA + ramSize
                && !(at < u + SplitRingLayout.usedBytes(size) && u < at + 16)
        }

        func rawDescriptor(_ input: inout FuzzInput) {
            let sel = input.u8()
            let index = sel & 0x80 != 0 ? input.u16() & 0x7f : UInt16(sel) & (size - 1)
            let iova = address(&input)
            let len = length(&input)
            let f = input.u8()
            let flags = f & 0x80 != 0 ? input.u16() : UInt16(f & 7)
            let n = input.u8()
            let next = n & 0x80 != 0 ? input.u16() : UInt16(n) & (size - 1)
            guard descriptorFits(index, table: driver.addresses.descTable) else { return }
            driver.writeDescriptor(index, iova: iova, length: len, flags: flags, next: next)
        }

        /// An indirect table of raw (mostly sane) entries, referenced by a
        /// descriptor in the ring and optionally made available.
        func indirectTable(_ input: inout FuzzInput) {
            let entries = 1 + input.below(8)
            guard let table = allocate(UInt64(entries) * 16) else { return }
            for i in 0..<entries {
                let iova = address(&input)
                let len = length(&input)
                let f = input.u8()
                let flags = f & 0x80 != 0 ? input.u16() : UInt16(f & 7)
                let next = input.u8() & 0x40 != 0 ? UInt16(input.u8()) : UInt16(i + 1)
                driver.writeDescriptor(UInt16(i), iova: iova, length: len, flags: flags, next: next, table: table)
            }
            let head = UInt16(input.u8()) & (size - 1)
            let m = input.u8()
            let len = m & 0x10 != 0 ? length(&input) : UInt32(entries * 16)
            let flags = m & 0x20 != 0 ? UInt16(m & 7) | SplitRingLayout.descFlagIndirect : SplitRingLayout.descFlagIndirect
            driver.writeDescriptor(head, iova: table, length: len, flags: flags, next: UInt16(m >> 6))
            if m & 0x08 == 0 {
                driver.stage(head: head)
                driver.publish()
            }
        }

        /// Overwrites a few bytes of guest memory (rings included).
        func poke(_ input: inout FuzzInput) {
            let offset = Int(input.u16()) % Int(ramSize)
            let count = min(input.below(16) + 1, Int(ramSize) - offset)
            let b = input.take(count)
            for i in 0..<count where !inUsedRing(ramIOVA + UInt64(offset + i)) { ram[offset + i] = b[i] }
        }

        /// The driver never writes the used ring here: the device owns it (and
        /// the checks read it back).
        func inUsedRing(_ at: UInt64) -> Bool {
            let u = driver.addresses.usedRing
            return at >= u && at < u + SplitRingLayout.usedBytes(size)
        }

        /// A request laid out like Linux's virtio_blk does (direct descriptors
        /// at consecutive ring slots, or one indirect table), then up to two
        /// corruptions of its descriptors, then staged and published.
        func request(_ input: inout FuzzInput) {
            let kind = input.u8()
            let type: UInt32
            switch kind % 8 {
            case 0, 1: type = BlkRequestType.read
            case 2, 3: type = BlkRequestType.write
            case 4: type = BlkRequestType.flush
            case 5: type = BlkRequestType.getID
            case 6: type = input.bool() ? BlkRequestType.discard : BlkRequestType.writeZeroes
            default: type = input.u32()
            }
            let s = input.u8()
            let sector: UInt64 = s & 0x80 != 0 ? input.u64() : UInt64(s) & 0x7f + (s & 0x40 != 0 ? 100 : 0)
            let dataBytes: UInt32
            switch type {
            case BlkRequestType.read, BlkRequestType.write: dataBytes = UInt32(input.u8() % 9) * 512
            case BlkRequestType.getID: dataBytes = UInt32(1 + input.below(24))
            case BlkRequestType.discard, BlkRequestType.writeZeroes: dataBytes = 16
            default: dataBytes = UInt32(input.below(3)) * 512
            }
            let segments = 1 + input.below(4)
            let useIndirect = kind & 0x80 != 0

            guard let header = allocate(16) else { return }
            let hp = memory.pointer(header)
            hp.storeBytes(of: type.littleEndian, as: UInt32.self)
            hp.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
            hp.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
            var buffers = [SimBuffer(iova: header, length: 16, writable: false)]
            if dataBytes > 0 {
                guard let data = allocate(UInt64(dataBytes), alignment: 512) else { return }
                let writable = type == BlkRequestType.read || type == BlkRequestType.getID
                if type == BlkRequestType.discard || type == BlkRequestType.writeZeroes {
                    let p = memory.pointer(data)
                    let rs = input.u8()
                    p.storeBytes(of: (UInt64(rs & 0x7f) + (rs & 0x80 != 0 ? 120 : 0)).littleEndian, as: UInt64.self)
                    p.storeBytes(of: UInt32(input.u8() % 20).littleEndian, toByteOffset: 8, as: UInt32.self)
                    p.storeBytes(of: UInt32(input.u8() % 4 == 0 ? input.u8() : 0).littleEndian, toByteOffset: 12,
                                 as: UInt32.self)
                }
                let n = max(1, min(segments, Int(dataBytes / 512)))
                let chunk = (dataBytes / UInt32(n)) / 512 * 512
                var off: UInt32 = 0
                for i in 0..<n {
                    let len = i == n - 1 ? dataBytes - off : chunk
                    buffers.append(SimBuffer(iova: data + UInt64(off), length: len, writable: writable))
                    off += len
                }
            }
            guard let status = allocate(1, alignment: 1) else { return }
            memory.pointer(status).storeBytes(of: UInt8(0xff), as: UInt8.self)
            buffers.append(SimBuffer(iova: status, length: 1, writable: true))

            let first = UInt16(input.u8()) & (size - 1)
            let table: UInt64
            var ids: [UInt16]
            if useIndirect {
                guard let t = allocate(UInt64(buffers.count) * 16) else { return }
                table = t
                ids = (0..<buffers.count).map { UInt16($0) }
            } else {
                guard buffers.count <= Int(size) else { return }
                table = driver.addresses.descTable
                ids = (0..<buffers.count).map { (first &+ UInt16($0)) & (size - 1) }
            }
            for (i, b) in buffers.enumerated() {
                let last = i == buffers.count - 1
                driver.writeDescriptor(ids[i], iova: b.iova, length: b.length,
                                       flags: (b.writable ? SplitRingLayout.descFlagWrite : 0)
                                           | (last ? 0 : SplitRingLayout.descFlagNext),
                                       next: last ? 0 : ids[i + 1], table: table)
            }
            if useIndirect {
                driver.writeDescriptor(first, iova: table, length: UInt32(buffers.count * 16),
                                       flags: SplitRingLayout.descFlagIndirect, next: 0)
            }
            // Corruptions: the low bits of `m` say how many (mostly none).
            let m = input.u8()
            for _ in 0..<Int(m & 3 == 3 ? 2 : m & 3 == 2 ? 1 : 0) {
                let victim = input.below(buffers.count + 1)   // == count: the indirect descriptor itself
                let onTable = !(useIndirect && victim == buffers.count)
                let index = victim < buffers.count ? ids[victim] : first
                corrupt(index, table: onTable ? table : driver.addresses.descTable, head: first, &input)
            }
            if m & 0x80 == 0 {
                driver.stage(head: first)
                if m & 0x40 != 0 { driver.stage(head: first) }   // duplicate head
                driver.publish()
            }
        }

        func corrupt(_ index: UInt16, table: UInt64, head: UInt16, _ input: inout FuzzInput) {
            guard descriptorFits(index, table: table) else { return }
            let p = memory.pointer(table + UInt64(index) * 16)
            switch input.u8() % 10 {
            case 0: // flip flag bits
                let f = UInt16(littleEndian: p.load(fromByteOffset: 12, as: UInt16.self)) ^ UInt16(1 << input.below(3))
                p.storeBytes(of: f.littleEndian, toByteOffset: 12, as: UInt16.self)
            case 1: // next out of range (with NEXT set)
                let f = UInt16(littleEndian: p.load(fromByteOffset: 12, as: UInt16.self)) | SplitRingLayout.descFlagNext
                p.storeBytes(of: f.littleEndian, toByteOffset: 12, as: UInt16.self)
                p.storeBytes(of: (size &+ UInt16(input.u8())).littleEndian, toByteOffset: 14, as: UInt16.self)
            case 2: // loop back to the head / to itself
                let f = UInt16(littleEndian: p.load(fromByteOffset: 12, as: UInt16.self)) | SplitRingLayout.descFlagNext
                p.storeBytes(of: f.littleEndian, toByteOffset: 12, as: UInt16.self)
                p.storeBytes(of: (input.bool() ? head : index).littleEndian, toByteOffset: 14, as: UInt16.self)
            case 3: // zero length
                p.storeBytes(of: UInt32(0), toByteOffset: 8, as: UInt32.self)
            case 4: // wrapping address
                p.storeBytes(of: (UInt64.max - UInt64(input.u8())).littleEndian, as: UInt64.self)
            case 5: // unmapped address
                p.storeBytes(of: UInt64(input.u16()).littleEndian, as: UInt64.self)
            case 6: // read-only region
                p.storeBytes(of: (romIOVA + UInt64(input.u16()) % romSize).littleEndian, as: UInt64.self)
            case 7: // length off by a little, or huge
                let l = UInt32(littleEndian: p.load(fromByteOffset: 8, as: UInt32.self))
                p.storeBytes(of: (input.bool() ? l &+ UInt32(input.u8()) : l &- 1).littleEndian, toByteOffset: 8,
                             as: UInt32.self)
            case 8: // indirect flag where it does not belong
                let f = UInt16(littleEndian: p.load(fromByteOffset: 12, as: UInt16.self)) | SplitRingLayout.descFlagIndirect
                p.storeBytes(of: f.littleEndian, toByteOffset: 12, as: UInt16.self)
            default: // any 16 bytes
                for i in 0..<16 { p.storeBytes(of: input.u8(), toByteOffset: i, as: UInt8.self) }
            }
        }

        /// Requests built by the package's own `BlkRequestBuilder` (free-list
        /// managed descriptors), while there is room.
        func builderRequest(_ input: inout FuzzInput) {
            guard trackFreeList, memory.allocationMark() + 8192 <= ramSize else { return }
            let b = BlkRequestBuilder(driver: driver, indirect: input.bool())
            let sector = UInt64(input.u8())
            let len = UInt32(1 + input.below(8)) * 512
            switch input.u8() % 6 {
            case 0: _ = b.read(sector: sector, length: len, segments: 1 + input.below(3))
            case 1: _ = b.write(sector: sector, bytes: [UInt8](repeating: input.u8(), count: Int(len)),
                                segments: 1 + input.below(3))
            case 2: _ = b.bare(type: BlkRequestType.flush)
            case 3: _ = b.getID()
            case 4: _ = b.range(type: input.bool() ? BlkRequestType.discard : BlkRequestType.writeZeroes,
                                sector: sector, sectors: UInt32(input.below(16)), flags: UInt32(input.below(3)))
            default: _ = b.bare(type: input.u32(), sector: sector)
            }
        }

        // MARK: device side and the checks

        func service() {
            guard !broken else { return }
            let a = driver.addresses
            let start = worker.control.currentAvailIndex
            let availIdx = driverAvail
            let pending = availIdx &- start
            let runaway = pending > size
            var batch: [UInt16] = []
            if !runaway {
                for i in 0..<pending {
                    let slot = Int((start &+ i) & (size - 1))
                    batch.append(UInt16(littleEndian: memory.pointer(a.availRing + 4 + UInt64(2 * slot))
                        .load(as: UInt16.self)))
                }
            }
            // Reference walks of every chain in the batch. The outcome is fixed
            // up to the first fatal chain, unless a head repeats before it (the
            // repeat is either completed already or still in flight, depending
            // on the request: both are legal).
            var walks: [RefChain] = []
            var cache: [UInt16: RefChain] = [:]
            for head in batch {
                if let w = cache[head] { walks.append(w); continue }
                let w = walk(head)
                cache[head] = w
                walks.append(w)
            }
            var fatalAt: Int? = runaway ? 0 : nil
            var uncertain = false
            var seen = Set<UInt16>()
            for (i, w) in walks.enumerated() {
                if seen.contains(w.head) { uncertain = true; break }
                seen.insert(w.head)
                if w.fatal { fatalAt = i; break }
            }
            // Chains whose writes can change what the device reads later in the
            // pass (rings, descriptor tables) make the outcome unpredictable.
            var structures: [Range<UInt64>] = [
                a.descTable..<(a.descTable + SplitRingLayout.descTableBytes(size)),
                a.availRing..<(a.availRing + SplitRingLayout.availBytes(size)),
                a.usedRing..<(a.usedRing + SplitRingLayout.usedBytes(size)),
            ]
            for w in walks { structures += w.tables }
            let writable = walks.flatMap(\.writable)
            let selfModifying = writable.contains { w in structures.contains { $0.overlaps(w) } }
            if selfModifying { uncertain = true }

            // Poison status bytes that belong to exactly one chain and nothing else.
            let everything = walks.flatMap(\.all) + structures
            var owed: [UInt64] = []
            for (i, w) in walks.enumerated() where fatalAt == nil || i < fatalAt! {
                // Only its own last buffer may contain it.
                guard let s = w.statusByte, everything.filter({ $0.contains(s) }).count == 1 else { continue }
                owed.append(s)
            }
            if uncertain { owed = [] }
            for s in owed { ram[Int(s - ramIOVA)] = poison }

            memcpy(snapshot, ram, Int(ramSize))
            memcpy(snapshot + Int(ramSize), rom, Int(romSize))
            view.writeSpans.removeAll(keepingCapacity: true)
            view.recording = true
            var passes = 0
            while worker.serviceOnceSynchronously(), passes < 8 { passes += 1 }
            view.recording = false

            broken = worker.control.needsReset
            let consumed = worker.control.currentAvailIndex &- start
            let usedIdx = UInt16(littleEndian: memory.pointer(a.usedRing + 2).load(as: UInt16.self))
            var used: [(head: UInt32, len: UInt32)] = []
            var u = usedSeen
            while u != usedIdx {
                let p = memory.pointer(a.usedRing + 4 + 8 * UInt64(u & (size - 1)))
                used.append((UInt32(littleEndian: p.load(as: UInt32.self)),
                             UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self))))
                u &+= 1
                if used.count > 2 * Int(size) + 2 { break }
            }
            usedSeen = usedIdx
            if trackFreeList { _ = driver.collectUsed() }

            if QueueFuzzer.trace {
                print("pass: avail \(start)->\(availIdx) batch \(batch) fatalAt \(String(describing: fatalAt))"
                    + " uncertain \(uncertain) selfModifying \(selfModifying) | consumed \(consumed) broken \(broken)"
                    + " used \(used.map { "\($0.head):\($0.len)" }) status \(owed.map { ram[Int($0 - ramIOVA)] })")
            }
            // 1. Memory: changes only in writable buffers of the batch and the used ring.
            fuzzCheck(memcmp(rom, snapshot + Int(ramSize), Int(romSize)) == 0, "read-only region changed")
            let usedArea = a.usedRing..<(a.usedRing + SplitRingLayout.usedBytes(size))
            var allowed = writable + [usedArea]
            if selfModifying { allowed += view.writeSpans }
            let merged = merge(allowed)
            let chunk = 256
            for c in stride(from: 0, to: Int(ramSize), by: chunk) where memcmp(ram + c, snapshot + c, chunk) != 0 {
                let lo = ramIOVA + UInt64(c)
                if merged.contains(where: { $0.lowerBound <= lo && lo + UInt64(chunk) <= $0.upperBound }) { continue }
                for i in c..<(c + chunk) where ram[i] != snapshot[i] {
                    let at = ramIOVA + UInt64(i)
                    fuzzCheck(allowed.contains { $0.contains(at) },
                              "device wrote 0x\(String(at, radix: 16)) outside every writable buffer")
                }
            }
            // 2. Status bytes.
            if !broken || fatalAt != nil {
                for s in owed {
                    let v = ram[Int(s - ramIOVA)]
                    fuzzCheck(v <= 2, "status byte at 0x\(String(s, radix: 16)) is \(v)")
                }
            }
            guard !uncertain else { return }
            // 3. NEEDS_RESET exactly when the ring cannot be trusted.
            if let f = fatalAt {
                fuzzCheck(broken, "fatal chain (batch position \(f)) did not stop the queue")
            } else {
                fuzzCheck(!broken, "queue stopped without a fatal ring error")
            }
            // 4. One used entry per consumed head.
            let completed = fatalAt ?? batch.count
            if !broken {
                fuzzCheck(consumed == pending, "consumed \(consumed) of \(pending) available chains")
            }
            fuzzCheck(used.count == completed, "\(used.count) used entries for \(completed) completed chains")
            var expected: [UInt16: Int] = [:]
            for h in batch.prefix(completed) { expected[h, default: 0] += 1 }
            for e in used {
                fuzzCheck(e.head < UInt32(size), "used entry names head \(e.head)")
                let h = UInt16(e.head)
                fuzzCheck((expected[h] ?? 0) > 0, "used entry for head \(h) that was not consumed (or twice)")
                expected[h]! -= 1
                let w = cache[h]!
                fuzzCheck(UInt64(e.len) <= w.writableBytes,
                          "used length \(e.len) > \(w.writableBytes) writable bytes (head \(h))")
            }
        }

        /// `ranges` sorted and coalesced.
        func merge(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
            var out: [Range<UInt64>] = []
            for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
                if let last = out.last, r.lowerBound <= last.upperBound {
                    out[out.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
                } else {
                    out.append(r)
                }
            }
            return out
        }

        /// A descriptor chain as the virtio spec (and this device's limits)
        /// define it: at most `size` descriptors, one level of indirection
        /// (only when negotiated, only without NEXT, a whole number of
        /// entries, no more than the remaining budget, inside one mapping),
        /// every index inside its table.
        struct RefChain {
            var head: UInt16
            var fatal = false
            /// Every data buffer (readable or writable), clipped to the RAM.
            var all: [Range<UInt64>] = []
            /// Device-writable buffers, clipped to the RAM.
            var writable: [Range<UInt64>] = []
            var writableBytes: UInt64 = 0
            var tables: [Range<UInt64>] = []
            /// The last byte of the last descriptor, when it is writable RAM.
            var statusByte: UInt64?
        }

        func clipToRAM(_ address: UInt64, _ length: UInt32) -> Range<UInt64>? {
            guard length > 0 else { return nil }
            let end = address.addingReportingOverflow(UInt64(length))
            let hi = end.overflow ? UInt64.max : end.partialValue
            let lo = max(address, ramIOVA), top = min(hi, ramIOVA + ramSize)
            return lo < top ? lo..<top : nil
        }

        func regionContains(_ address: UInt64, _ length: UInt64) -> Bool {
            guard length > 0, address &+ (length - 1) >= address else { return false }
            for r in memory.regions where address >= r.iova && address - r.iova < r.size {
                return r.size - (address - r.iova) >= length
            }
            return false
        }

        func walk(_ head: UInt16) -> RefChain {
            var chain = RefChain(head: head)
            var table = driver.addresses.descTable
            var tableSize = Int(size)
            var index = Int(head)
            var inIndirect = false
            var budget = Int(size)
            var last: (UInt64, UInt32, UInt16)?
            while true {
                guard index < tableSize else { chain.fatal = true; return chain }
                let p = memory.translate(table + UInt64(index) * 16, length: 16, write: false)!.pointer
                let addr = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
                let len = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
                let flags = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
                let next = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
                if flags & SplitRingLayout.descFlagIndirect != 0 {
                    let entries = Int(len) / 16
                    guard indirectFeature, !inIndirect, flags & SplitRingLayout.descFlagNext == 0,
                          len > 0, len % 16 == 0, entries <= budget, regionContains(addr, UInt64(len))
                    else { chain.fatal = true; return chain }
                    chain.tables.append(addr..<(addr + UInt64(len)))
                    table = addr
                    tableSize = entries
                    index = 0
                    inIndirect = true
                    continue
                }
                guard budget > 0 else { chain.fatal = true; return chain }
                budget -= 1
                last = (addr, len, flags)
                if let r = clipToRAM(addr, len) {
                    chain.all.append(r)
                    if flags & SplitRingLayout.descFlagWrite != 0 { chain.writable.append(r) }
                }
                if flags & SplitRingLayout.descFlagWrite != 0 { chain.writableBytes &+= UInt64(len) }
                guard flags & SplitRingLayout.descFlagNext != 0 else { break }
                index = Int(next)
            }
            if let (addr, len, flags) = last, flags & SplitRingLayout.descFlagWrite != 0, len > 0,
               addr &+ UInt64(len - 1) >= addr {
                let s = addr + UInt64(len - 1)
                if s >= ramIOVA && s < ramIOVA + ramSize { chain.statusByte = s }
            }
            return chain
        }
    }
}

/// The worker's view of guest memory: the simulated memory, plus a record
/// of every span handed out for writing (what the device may have written).
final class RecordingMemory: GuestMemory, @unchecked Sendable {
    let inner: SimulatedGuestMemory
    var recording = false
    var writeSpans: [Range<UInt64>] = []

    init(_ inner: SimulatedGuestMemory) { self.inner = inner }

    func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan? {
        guard let span = inner.translate(address, length: length, write: write) else { return nil }
        if write && recording {
            writeSpans.append(address..<(address &+ span.length))
        }
        return span
    }
}
