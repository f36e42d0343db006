import CSys
import Glibc
import SystemSupport
import VirtioCore

/// One buffer of a chain the simulated driver builds.
public struct SimBuffer: Equatable {
    public var iova: UInt64
    public var length: UInt32
    public var writable: Bool

    public init(iova: UInt64, length: UInt32, writable: Bool) {
        self.iova = iova
        self.length = length
        self.writable = writable
    }
}

/// A used element read back from the ring.
public struct SimUsed: Equatable {
    public var head: UInt16
    public var length: UInt32

    public init(head: UInt16, length: UInt32) {
        self.head = head
        self.length = length
    }
}

/// The driver side of one split virtqueue in simulated guest memory: it owns
/// the descriptor table, avail and used rings, a free-descriptor list, the
/// kick eventfd, and the driver's event-index settings. It builds direct and
/// indirect chains, publishes them (release store of avail.idx), kicks
/// (honouring the device's suppression) and reads used entries (acquire).
/// Raw writers let tests and fuzzers build malformed chains.
public final class SimulatedDriver: @unchecked Sendable {
    public let memory: SimulatedGuestMemory
    public let size: UInt16
    public let addresses: QueueAddresses
    public let eventIdx: Bool
    /// Written to kick the device (the device polls it).
    public let kickFD: Int32
    public private(set) var kicks = 0
    public private(set) var suppressedKicks = 0
    var freeList: [UInt16]
    var chains: [UInt16: [UInt16]] = [:]
    var availIdx: UInt16 = 0
    var lastUsedSeen: UInt16 = 0
    var lastKickedAvail: UInt16 = 0

    public init(memory: SimulatedGuestMemory, size: UInt16 = 256, eventIdx: Bool = true) {
        self.memory = memory
        self.size = size
        self.eventIdx = eventIdx
        let desc = memory.allocate(SplitRingLayout.descTableBytes(size), alignment: 16)
        let avail = memory.allocate(SplitRingLayout.availBytes(size), alignment: 2)
        let used = memory.allocate(SplitRingLayout.usedBytes(size), alignment: 4)
        addresses = QueueAddresses(size: size, descTable: desc, availRing: avail, usedRing: used)
        kickFD = (try? EventFD().fd) ?? -1
        freeList = (0..<size).reversed().map { $0 }
    }

    deinit { close(kickFD) }

    var availPtr: UnsafeMutableRawPointer { memory.pointer(addresses.availRing) }
    var usedPtr: UnsafeMutableRawPointer { memory.pointer(addresses.usedRing) }

    public var freeDescriptors: Int { freeList.count }

    // MARK: raw access (for malformed chains)

    public func writeDescriptor(_ index: UInt16, iova: UInt64, length: UInt32, flags: UInt16, next: UInt16,
                                table: UInt64? = nil) {
        let p = memory.pointer((table ?? addresses.descTable) + UInt64(index) * 16)
        p.storeBytes(of: iova.littleEndian, as: UInt64.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Puts `head` in the avail ring without publishing.
    public func stage(head: UInt16) {
        let slot = Int(availIdx & (size - 1))
        availPtr.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * slot, as: UInt16.self)
        availIdx &+= 1
    }

    /// Makes staged heads visible (release store of avail.idx).
    public func publish() { vb_store_release_u16(availPtr + 2, availIdx.littleEndian) }

    /// Sets avail.idx to an arbitrary value (malformed-ring tests).
    public func forceAvailIndex(_ v: UInt16) {
        availIdx = v
        publish()
    }

    // MARK: chains

    /// Builds a chain from `buffers` (direct descriptors, or one indirect table
    /// when `indirect`), stages and publishes it. Returns the head, or nil when
    /// the ring has too few free descriptors.
    @discardableResult
    public func add(_ buffers: [SimBuffer], indirect: Bool = false) -> UInt16? {
        guard !buffers.isEmpty else { return nil }
        let head: UInt16
        if indirect {
            guard let h = freeList.popLast() else { return nil }
            head = h
            let table = memory.allocate(UInt64(buffers.count) * 16, alignment: 16)
            for (i, b) in buffers.enumerated() {
                let last = i == buffers.count - 1
                writeDescriptor(UInt16(i), iova: b.iova, length: b.length,
                                flags: (b.writable ? SplitRingLayout.descFlagWrite : 0)
                                    | (last ? 0 : SplitRingLayout.descFlagNext),
                                next: UInt16(i + 1), table: table)
            }
            writeDescriptor(head, iova: table, length: UInt32(buffers.count * 16),
                            flags: SplitRingLayout.descFlagIndirect, next: 0)
            chains[head] = [head]
        } else {
            guard freeList.count >= buffers.count else { return nil }
            let ids = (0..<buffers.count).map { _ in freeList.popLast()! }
            for (i, b) in buffers.enumerated() {
                let last = i == buffers.count - 1
                writeDescriptor(ids[i], iova: b.iova, length: b.length,
                                flags: (b.writable ? SplitRingLayout.descFlagWrite : 0)
                                    | (last ? 0 : SplitRingLayout.descFlagNext),
                                next: last ? 0 : ids[i + 1])
            }
            head = ids[0]
            chains[head] = ids
        }
        stage(head: head)
        publish()
        return head
    }

    /// Kicks the device unless it asked not to be (avail_event / NO_NOTIFY).
    /// Returns whether a kick was sent.
    @discardableResult
    public func kick(force: Bool = false) -> Bool {
        vb_fence_seq_cst()
        let old = lastKickedAvail
        let new = availIdx
        var wanted: Bool
        if eventIdx {
            let availEvent = UInt16(littleEndian: vb_load_relaxed_u16(usedPtr + 4 + 8 * Int(size)))
            wanted = SplitRingLayout.needsEvent(event: availEvent, new: new, old: old)
        } else {
            wanted = UInt16(littleEndian: vb_load_relaxed_u16(usedPtr)) & SplitRingLayout.usedFlagNoNotify == 0
        }
        lastKickedAvail = new
        if wanted || force {
            var one: UInt64 = 1
            _ = write(kickFD, &one, 8)
            kicks += 1
            return true
        }
        suppressedKicks += 1
        return false
    }

    /// Asks for an interrupt after the next `after` used entries (used_event),
    /// or sets/clears NO_INTERRUPT without EVENT_IDX.
    public func requestInterrupt(afterUsed after: UInt16 = 0, suppress: Bool = false) {
        if eventIdx {
            let v = lastUsedSeen &+ after
            availPtr.storeBytes(of: v.littleEndian, toByteOffset: 4 + 2 * Int(size), as: UInt16.self)
        } else {
            availPtr.storeBytes(of: (suppress ? SplitRingLayout.availFlagNoInterrupt : 0).littleEndian,
                                as: UInt16.self)
        }
        vb_fence_seq_cst()
    }

    /// used.idx as the device last published it (acquire).
    public var usedIndex: UInt16 { UInt16(littleEndian: vb_load_acquire_u16(usedPtr + 2)) }

    /// Reads every new used element and returns their descriptors to the free list.
    public func collectUsed() -> [SimUsed] {
        let idx = usedIndex
        var out: [SimUsed] = []
        while lastUsedSeen != idx {
            let slot = Int(lastUsedSeen & (size - 1))
            let p = usedPtr + 4 + 8 * slot
            let head = UInt16(truncatingIfNeeded: UInt32(littleEndian: p.load(as: UInt32.self)))
            let len = UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self))
            out.append(SimUsed(head: head, length: len))
            if let ids = chains.removeValue(forKey: head) { freeList.append(contentsOf: ids) }
            lastUsedSeen &+= 1
        }
        return out
    }

    /// Polls `collectUsed` until `count` elements arrived or `timeoutMs` passed.
    public func waitUsed(count: Int, timeoutMs: Int = 5000) -> [SimUsed] {
        var got: [SimUsed] = []
        var waited = 0
        while got.count < count {
            got += collectUsed()
            if got.count >= count { break }
            if waited >= timeoutMs * 10 { break }
            usleep(100)
            waited += 1
        }
        return got
    }
}

extension SimulatedDriver {
    /// Makes an already-built chain available again (benchmarks reuse chains
    /// whose descriptors never change). No allocation.
    public func resubmit(head: UInt16) { stage(head: head) }

    /// Reads new used elements without touching the free list (for chains
    /// recycled with `resubmit`); returns how many arrived. No allocation.
    @inline(__always)
    public func reapRecycled() -> Int {
        let idx = usedIndex
        let n = Int(idx &- lastUsedSeen)
        lastUsedSeen = idx
        return n
    }
}
