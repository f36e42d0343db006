import CSys

/// Where a split virtqueue lives, as the driver configured it.
public struct QueueAddresses: Equatable, Sendable {
    public var size: UInt16
    public var descTable: UInt64
    public var availRing: UInt64
    public var usedRing: UInt64

    public init(size: UInt16, descTable: UInt64, availRing: UInt64, usedRing: UInt64) {
        self.size = size
        self.descTable = descTable
        self.availRing = availRing
        self.usedRing = usedRing
    }
}

/// Device side of one split virtqueue: it owns the device's indices
/// (next avail to consume, next used to publish, last used index signalled)
/// and the resolved ring pointers. Memory accesses to the indices the other
/// side reads or writes use acquire/release ordering; the event-index checks
/// are preceded by a full fence. No syscalls, no allocation.
public struct SplitQueue {
    public let size: UInt16
    public let addresses: QueueAddresses
    public let eventIdx: Bool
    @usableFromInline var desc: UnsafeMutableRawPointer
    @usableFromInline var avail: UnsafeMutableRawPointer
    @usableFromInline var used: UnsafeMutableRawPointer

    @usableFromInline var lastAvail: UInt16
    @usableFromInline var nextUsed: UInt16
    @usableFromInline var publishedUsed: UInt16
    /// Next avail ring slot to consume.
    @inlinable public var lastAvailIdx: UInt16 { lastAvail }
    /// Next used ring slot to fill (published up to here by `publishUsed`).
    @inlinable public var nextUsedIdx: UInt16 { nextUsed }
    /// used.idx as last published.
    @inlinable public var publishedUsedIdx: UInt16 { publishedUsed }
    /// used.idx at the last interrupt decision that fired.
    @usableFromInline var signalledUsedIdx: UInt16
    @usableFromInline var signalledValid = false

    /// Resolves ring pointers through `memory`. `startAvail` resumes a queue
    /// (0 for a fresh one); the used index continues from what the ring holds.
    public init(addresses a: QueueAddresses, memory: some GuestMemory, eventIdx: Bool,
                startAvail: UInt16 = 0) throws(QueueError) {
        guard a.size > 0, a.size & (a.size - 1) == 0 else { throw .headOutOfRange(a.size) }
        guard let d = memory.contiguous(a.descTable, length: SplitRingLayout.descTableBytes(a.size), write: false)
        else { throw .ringUnmapped(area: "descriptor", address: a.descTable) }
        guard let av = memory.contiguous(a.availRing, length: SplitRingLayout.availBytes(a.size), write: false)
        else { throw .ringUnmapped(area: "avail", address: a.availRing) }
        guard let u = memory.contiguous(a.usedRing, length: SplitRingLayout.usedBytes(a.size), write: true)
        else { throw .ringUnmapped(area: "used", address: a.usedRing) }
        size = a.size
        addresses = a
        self.eventIdx = eventIdx
        desc = d
        avail = av
        used = u
        lastAvail = startAvail
        let usedIdx = UInt16(littleEndian: vb_load_acquire_u16(u + 2))
        nextUsed = usedIdx
        publishedUsed = usedIdx
        signalledUsedIdx = usedIdx
    }

    /// Re-resolves ring pointers after the mappings changed (IOTLB update).
    public mutating func remap(memory: some GuestMemory) throws(QueueError) {
        let a = addresses
        guard let d = memory.contiguous(a.descTable, length: SplitRingLayout.descTableBytes(a.size), write: false)
        else { throw .ringUnmapped(area: "descriptor", address: a.descTable) }
        guard let av = memory.contiguous(a.availRing, length: SplitRingLayout.availBytes(a.size), write: false)
        else { throw .ringUnmapped(area: "avail", address: a.availRing) }
        guard let u = memory.contiguous(a.usedRing, length: SplitRingLayout.usedBytes(a.size), write: true)
        else { throw .ringUnmapped(area: "used", address: a.usedRing) }
        desc = d
        avail = av
        used = u
    }

    /// The descriptor table, for the chain walker.
    @inlinable public var descriptorTable: UnsafeRawPointer { UnsafeRawPointer(desc) }

    /// Chains the driver has made available and the device has not consumed.
    @inlinable
    public func pendingCount() throws(QueueError) -> UInt16 {
        let idx = UInt16(littleEndian: vb_load_acquire_u16(avail + 2))
        let n = idx &- lastAvail
        guard n <= size else { throw .availIndexRunaway(avail: idx, lastSeen: lastAvail) }
        return n
    }

    /// Takes the next available head. Call only when `pendingCount() > 0`
    /// (that load's acquire orders this read).
    @inlinable
    public mutating func popHead() throws(QueueError) -> UInt16 {
        let slot = Int(lastAvail & (size &- 1))
        let head = UInt16(littleEndian: avail.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        lastAvail &+= 1
        guard head < size else { throw .headOutOfRange(head) }
        return head
    }

    /// Fills the next used element (not yet visible to the driver).
    @inlinable
    public mutating func addUsed(head: UInt16, length: UInt32) {
        let slot = Int(nextUsed & (size &- 1))
        let p = used + 4 + 8 * slot
        p.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        nextUsed &+= 1
    }

    /// Makes the used elements added so far visible (release store of used.idx).
    /// Returns true if anything new was published.
    @inlinable @discardableResult
    public mutating func publishUsed() -> Bool {
        guard nextUsed != publishedUsed else { return false }
        vb_store_release_u16(used + 2, nextUsed.littleEndian)
        publishedUsed = nextUsed
        return true
    }

    /// Whether the driver wants an interrupt for what was published since the
    /// last interrupt (EVENT_IDX's used_event, or avail.flags NO_INTERRUPT).
    @inlinable
    public mutating func shouldInterrupt() -> Bool {
        vb_fence_seq_cst()
        let new = publishedUsed
        let old = signalledUsedIdx
        let valid = signalledValid
        signalledUsedIdx = new
        signalledValid = true
        if eventIdx {
            let usedEvent = UInt16(littleEndian: vb_load_relaxed_u16(avail + 4 + 2 * Int(size)))
            return !valid || SplitRingLayout.needsEvent(event: usedEvent, new: new, old: old)
        }
        let flags = UInt16(littleEndian: vb_load_relaxed_u16(avail))
        return flags & SplitRingLayout.availFlagNoInterrupt == 0
    }

    /// Asks the driver for kicks from `lastAvail` on, then reports whether
    /// work arrived meanwhile (re-check after the fence, so no kick is lost).
    @inlinable
    public mutating func enableNotifications() throws(QueueError) -> Bool {
        if eventIdx {
            vb_store_relaxed_u16(used + 4 + 8 * Int(size), lastAvail.littleEndian)
        } else {
            vb_store_relaxed_u16(used, 0)
        }
        vb_fence_seq_cst()
        return try pendingCount() > 0
    }

    /// Tells the driver kicks are not needed while the device is busy polling.
    @inlinable
    public mutating func disableNotifications() {
        if !eventIdx {
            vb_store_relaxed_u16(used, SplitRingLayout.usedFlagNoNotify.littleEndian)
        }
        // With EVENT_IDX, leaving avail_event behind suppresses kicks.
    }
}
