import CSys

/// One virtqueue's in-flight log: the part of the device's progress the
/// kernel does not keep when the daemon dies (which heads were consumed and
/// not yet returned, in what order, and how far the used ring's publication
/// was recorded). It lives in a `MAP_SHARED` mapping of a tmpfs file, so
/// every store that executed before a SIGKILL is in it afterwards.
///
/// Region layout (host byte order; `regionBytes(maxQueueSize:)` long,
/// page-aligned, one per queue so no cache line is shared between queues):
///
///     0   u64 magic "VBQLOG01"          8  u32 version
///     12  u16 queue index               14 u16 ring size (0: idle, nothing to recover)
///     16  u64 desc  24 u64 avail  32 u64 used   (IOVAs, checked against VQ_GET_INFO)
///     40  u16 avail base (start avail - used.idx at start)
///     48  u64 checksum of bytes 0..<48 (FNV-1a)
///     56  u16 logged used index (used.idx as of the last completed batch)
///     64  u64 seq[maxQueueSize]: 0 = head not in flight, else its submission number
///
/// Protocol (one writer: the queue's thread):
/// - consume head h: `seq[h] = n` (n increasing).
/// - complete h: write the used element (not yet visible); seq[h] stays set.
/// - publish a batch: release-store used.idx (ring), then release-store
///   `seq[h] = 0` for every head of the batch, then release-store the logged
///   used index. A head is thus "consumed" iff it is flagged or published.
///
/// Recovery, after a crash at any instruction: if the ring's used.idx differs
/// from the logged one, the batch [logged, ring) was published and the
/// heads in those used elements are done: clear them. Every still-flagged
/// head was consumed and not returned: resubmit them by sequence number.
/// The next avail index is used.idx + avail base + number flagged. A SIGKILL
/// stops the thread at one instruction with every earlier store done, so
/// only program order matters, which the release stores keep from the
/// compiler (and from weakly ordered CPUs).
public struct InflightQueueLog: @unchecked Sendable {
    public static let magic: UInt64 = 0x3130_474F_4C51_4256  // "VBQLOG01"
    public static let version: UInt32 = 1
    static let seqOffset = 64
    static let usedOffset = 56

    public let base: UnsafeMutableRawPointer
    public let maxQueueSize: UInt16

    public init(base: UnsafeMutableRawPointer, maxQueueSize: UInt16) {
        self.base = base
        self.maxQueueSize = maxQueueSize
    }

    /// Bytes one queue's region takes (a multiple of 4096).
    public static func regionBytes(maxQueueSize: UInt16) -> Int {
        let raw = seqOffset + 8 * Int(maxQueueSize)
        return (raw + 4095) & ~4095
    }

    // MARK: hot path (queue thread only)

    /// Records that `head` was consumed as request number `seq` (non-zero).
    @inlinable @inline(__always)
    public func markInflight(head: UInt16, seq: UInt64) {
        vb_store_relaxed_u64(base + 64 + 8 * Int(head), seq)
    }

    /// After used.idx was published: `head` is back with the driver.
    @inlinable @inline(__always)
    public func clearPublished(head: UInt16) {
        vb_store_release_u64(base + 64 + 8 * Int(head), 0)
    }

    /// After a batch's heads were cleared: the used index now published.
    @inlinable @inline(__always)
    public func recordUsed(_ idx: UInt16) {
        vb_store_release_u16(base + 56, idx)
    }

    // MARK: control path

    public var ringSize: UInt16 { base.load(fromByteOffset: 14, as: UInt16.self) }
    public var loggedUsedIdx: UInt16 { vb_load_acquire_u16(base + 56) }
    public func seq(of head: UInt16) -> UInt64 { base.load(fromByteOffset: 64 + 8 * Int(head), as: UInt64.self) }

    /// Marks the queue idle and forgets every head (driver reset, or a fresh queue).
    public func reset(queueIndex: UInt16) {
        vb_store_release_u16(base + 14, 0)
        (base + 16).initializeMemory(as: UInt8.self, repeating: 0, count: Self.regionBytes(maxQueueSize: maxQueueSize) - 16)
        base.storeBytes(of: Self.magic, as: UInt64.self)
        base.storeBytes(of: Self.version, toByteOffset: 8, as: UInt32.self)
        base.storeBytes(of: queueIndex, toByteOffset: 12, as: UInt16.self)
        vb_fence_release()
    }

    /// Starts logging a queue the driver just made ready. `startAvail` and
    /// `usedIdx` are where the device begins (nothing in flight).
    public func begin(queueIndex: UInt16, addresses: QueueAddresses, startAvail: UInt16, usedIdx: UInt16) {
        reset(queueIndex: queueIndex)
        base.storeBytes(of: addresses.descTable, toByteOffset: 16, as: UInt64.self)
        base.storeBytes(of: addresses.availRing, toByteOffset: 24, as: UInt64.self)
        base.storeBytes(of: addresses.usedRing, toByteOffset: 32, as: UInt64.self)
        base.storeBytes(of: startAvail &- usedIdx, toByteOffset: 40, as: UInt16.self)
        base.storeBytes(of: usedIdx, toByteOffset: 56, as: UInt16.self)
        base.storeBytes(of: addresses.size, toByteOffset: 14, as: UInt16.self)
        base.storeBytes(of: Self.checksum(base, 48), toByteOffset: 48, as: UInt64.self)
        vb_fence_release()
    }

    /// FNV-1a over `n` bytes: the checksum of every header in the state
    /// directory (the in-flight log's regions and the device state file).
    public static func checksum(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n {
            h ^= UInt64(p.load(fromByteOffset: i, as: UInt8.self))
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// What a queue resumes with after a crash.
    public struct Recovery: Equatable, Sendable {
        /// The next avail index to consume.
        public var startAvail: UInt16
        /// Heads consumed and not returned, in submission order: submit them again first.
        public var resubmit: [UInt16]
        /// Submission number to continue from (greater than every resubmitted one).
        public var nextSeq: UInt64
        /// Heads found published but still flagged (the crash hit between publish and log).
        public var reconciled: Int
        /// used.idx as the ring holds it.
        public var usedIdx: UInt16

        public init(startAvail: UInt16, resubmit: [UInt16], nextSeq: UInt64, reconciled: Int, usedIdx: UInt16) {
            self.startAvail = startAvail
            self.resubmit = resubmit
            self.nextSeq = nextSeq
            self.reconciled = reconciled
            self.usedIdx = usedIdx
        }
    }

    /// Rebuilds the queue's state from this log and the rings in `memory`,
    /// repairing the log to match (idempotent: a crash during recovery is
    /// recovered the same way). nil: the log says the queue was idle (start
    /// it fresh). Throws when the log is not one this queue could have
    /// written (garbage, another device or ring layout, inconsistent with
    /// the ring); the caller then refuses to adopt or resets.
    public func recover(queueIndex: UInt16, addresses: QueueAddresses,
                        memory: some GuestMemory) throws(InflightLogError) -> Recovery? {
        guard base.load(as: UInt64.self) == Self.magic else { throw .corrupt("queue \(queueIndex): bad magic") }
        guard base.load(fromByteOffset: 8, as: UInt32.self) == Self.version else {
            throw .corrupt("queue \(queueIndex): unknown version \(base.load(fromByteOffset: 8, as: UInt32.self))")
        }
        guard base.load(fromByteOffset: 12, as: UInt16.self) == queueIndex else {
            throw .corrupt("queue \(queueIndex): region belongs to queue \(base.load(fromByteOffset: 12, as: UInt16.self))")
        }
        let size = ringSize
        if size == 0 { return nil }
        guard base.load(fromByteOffset: 48, as: UInt64.self) == Self.checksum(base, 48) else {
            throw .corrupt("queue \(queueIndex): header checksum mismatch")
        }
        guard size <= maxQueueSize, size & (size &- 1) == 0 else {
            throw .corrupt("queue \(queueIndex): ring size \(size) out of range")
        }
        let logged = QueueAddresses(size: size, descTable: base.load(fromByteOffset: 16, as: UInt64.self),
                                    availRing: base.load(fromByteOffset: 24, as: UInt64.self),
                                    usedRing: base.load(fromByteOffset: 32, as: UInt64.self))
        guard logged == addresses else {
            throw .mismatch("queue \(queueIndex): the log describes another ring (size \(logged.size) at "
                + "0x\(String(logged.descTable, radix: 16)), the kernel says size \(addresses.size) at "
                + "0x\(String(addresses.descTable, radix: 16)))")
        }
        guard let used = memory.contiguous(addresses.usedRing, length: SplitRingLayout.usedBytes(size), write: true),
              let avail = memory.contiguous(addresses.availRing, length: SplitRingLayout.availBytes(size), write: false)
        else { throw .mismatch("queue \(queueIndex): rings not mapped") }
        // Heads beyond the ring size must never be flagged.
        for h in Int(size)..<Int(maxQueueSize) where seq(of: UInt16(h)) != 0 {
            throw .corrupt("queue \(queueIndex): head \(h) flagged beyond ring size \(size)")
        }
        let ringUsed = UInt16(littleEndian: vb_load_acquire_u16(used + 2))
        let loggedUsed = loggedUsedIdx
        let published = ringUsed &- loggedUsed
        guard published <= size else {
            throw .corrupt("queue \(queueIndex): used.idx \(ringUsed) is \(published) past the log's \(loggedUsed)")
        }
        var reconciled = 0
        for i in 0..<published {
            let slot = Int((loggedUsed &+ i) & (size &- 1))
            let head = UInt16(truncatingIfNeeded: UInt32(littleEndian: used.load(fromByteOffset: 4 + 8 * slot,
                                                                                   as: UInt32.self)))
            guard head < size else { throw .corrupt("queue \(queueIndex): used element head \(head) out of range") }
            if seq(of: head) != 0 { reconciled += 1 }
            clearPublished(head: head)
        }
        recordUsed(ringUsed)
        var flagged: [(seq: UInt64, head: UInt16)] = []
        for h in 0..<size {
            let s = seq(of: h)
            if s != 0 { flagged.append((s, h)) }
        }
        flagged.sort { $0.seq < $1.seq }
        for i in flagged.indices.dropFirst() where flagged[i].seq == flagged[i - 1].seq {
            throw .corrupt("queue \(queueIndex): two heads share submission number \(flagged[i].seq)")
        }
        let availBase = base.load(fromByteOffset: 40, as: UInt16.self)
        let startAvail = ringUsed &+ availBase &+ UInt16(flagged.count)
        let availIdx = UInt16(littleEndian: vb_load_acquire_u16(avail + 2))
        guard availIdx &- startAvail <= size else {
            throw .corrupt("queue \(queueIndex): rebuilt avail index \(startAvail) is ahead of the driver's \(availIdx)")
        }
        return Recovery(startAvail: startAvail, resubmit: flagged.map(\.head),
                        nextSeq: (flagged.last?.seq ?? 0) &+ 1, reconciled: reconciled, usedIdx: ringUsed)
    }
}

public enum InflightLogError: Error, Equatable, CustomStringConvertible {
    /// The log is not one this device could have written.
    case corrupt(String)
    /// The log is sound but describes another device, ring or layout.
    case mismatch(String)

    public var description: String {
        switch self {
        case .corrupt(let s): return "in-flight log is corrupt: \(s)"
        case .mismatch(let s): return "in-flight log does not match the device: \(s)"
        }
    }
}
