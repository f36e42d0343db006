import BlockBackends
import SystemSupport
import Glibc
import Synchronization

/// One map journal record: sectors `[first, first + count)` became overlay-owned.
/// A map slot of generation >= `epoch` covers it.
public struct JournalRecord: Equatable, Sendable {
    public var epoch: UInt64
    public var first: UInt64
    public var count: UInt64
}

/// The overlay's map journal (docs/zstd-image-format.md, "Map journal"): an
/// append-only region after the data area in which every write, discard or
/// write-zeroes that sets new map bits leaves one 32-byte record, with one
/// pwrite, before it completes. The page cache keeps the record across a
/// daemon crash, so the next open applies it on top of the newest map slot.
///
/// Two halves; the live one takes records of the live epoch (the generation
/// of the next map slot to be written, which covers them). A flush moves to
/// the other half with a new epoch before it snapshots the map. Lock-free on
/// the write path: a slot is claimed with a fetch-add on `tail`, and a
/// per-half `done` counter lets a flush wait for writers still inside the
/// half it leaves (they set their map bits after their record), so the
/// snapshot covers them and the half is never reused under a slow writer.
/// Everything else (`liveHalf`, `liveEpoch`, `begin`) belongs to the
/// overlay's flush lock.
final class OverlayJournal: @unchecked Sendable {
    let layout: OverlayLayout
    /// Seeds every record checksum: the boot's key (records of another boot
    /// never verify: that boot's page cache is gone, and with it maybe the data).
    let key: UInt64
    static var capacity: Int { OverlayLayout.journalRecordsPerHalf }

    /// [0]: tail (bit 32: the live half; bits 0-31: records handed out in it);
    /// [8], [16]: done per half; [24], [25]: epoch per half. Cache lines apart.
    private let cells: UnsafeMutablePointer<Atomic<UInt64>>
    private static let cellCount = 32
    private static let tailCell = 0
    private static func doneCell(_ half: Int) -> Int { 8 + 8 * half }
    private static func epochCell(_ half: Int) -> Int { 24 + half }

    private(set) var liveHalf = 0
    private(set) var liveEpoch: UInt64

    /// A journal whose live epoch is `epoch` in half 0, empty.
    init(layout: OverlayLayout, key: UInt64, epoch: UInt64) {
        self.layout = layout
        self.key = key
        liveEpoch = epoch
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.cellCount * 8, alignment: 64)
        cells = raw.bindMemory(to: Atomic<UInt64>.self, capacity: Self.cellCount)
        for i in 0..<Self.cellCount { (cells + i).initialize(to: Atomic(0)) }
        cells[Self.epochCell(0)].store(epoch, ordering: .relaxed)
    }

    deinit {
        cells.deinitialize(count: Self.cellCount)
        UnsafeMutableRawPointer(cells).deallocate()
    }

    /// A claimed record slot.
    struct Ticket {
        var half: Int
        var index: Int
        var epoch: UInt64
    }

    /// Claims the next record slot of the live half; nil when it is full
    /// (the caller flushes, which starts the other half, and tries again).
    @inline(__always)
    func reserve() -> Ticket? {
        // Load first: a full half is not pushed further (the count stays far from bit 32).
        if cells[Self.tailCell].load(ordering: .relaxed) & 0xFFFF_FFFF >= UInt64(Self.capacity) { return nil }
        let t = cells[Self.tailCell].wrappingAdd(1, ordering: .acquiring).oldValue
        let half = Int(t >> 32 & 1), index = Int(t & 0xFFFF_FFFF)
        guard index < Self.capacity else {
            cells[Self.doneCell(half)].wrappingAdd(1, ordering: .releasing)
            return nil
        }
        // Stored before the tail exchange that published this half (acquired above).
        return Ticket(half: half, index: index, epoch: cells[Self.epochCell(half)].load(ordering: .relaxed))
    }

    /// Writes the record for `ticket` into the page cache: 0 or a negated errno.
    @inline(__always)
    func append(_ ticket: Ticket, first: UInt64, count: UInt64, fd: Int32) -> Int32 {
        let position = ticket.half * Self.capacity + ticket.index
        var record = (ticket.epoch.littleEndian, first.littleEndian, count.littleEndian, UInt64(0))
        let n = withUnsafeMutableBytes(of: &record) { b -> Int in
            let sum = Self.checksum(UnsafeRawPointer(b.baseAddress!), key: key, position: position)
            b.storeBytes(of: sum.littleEndian, toByteOffset: 24, as: UInt64.self)
            return PositionalIO.writeFully(fd, UnsafeRawPointer(b.baseAddress!), count: OverlayLayout.journalRecordSize,
                                           at: layout.journalRecordOffset(half: ticket.half, index: ticket.index))
        }
        return n < 0 ? Int32(n) : 0
    }

    /// The writer holding `ticket` is done (its map bits are set, or it gave up).
    @inline(__always)
    func release(_ ticket: Ticket) {
        cells[Self.doneCell(ticket.half)].wrappingAdd(1, ordering: .releasing)
    }

    /// Whether the live half has no free slot left.
    var isFull: Bool { cells[Self.tailCell].load(ordering: .relaxed) & 0xFFFF_FFFF >= UInt64(Self.capacity) }

    /// Under the flush lock, before the map snapshot: makes `epoch` live in
    /// the other half (records of the old epoch are covered by the slot the
    /// flush writes), and waits until every writer that claimed a slot of the
    /// old half has set its map bits. A no-op when `epoch` is live already (a
    /// previous flush failed after starting it: its records stay, uncovered,
    /// until a slot of generation >= `epoch` is written).
    ///
    /// The other half holds records at most of the newest slot's generation
    /// (covered by it: reusing the half loses nothing); its writers were
    /// waited for when it was left.
    func begin(epoch: UInt64) {
        guard epoch != liveEpoch else { return }
        let next = 1 - liveHalf
        cells[Self.epochCell(next)].store(epoch, ordering: .relaxed)
        cells[Self.doneCell(next)].store(0, ordering: .relaxed)
        let old = cells[Self.tailCell].exchange(UInt64(next) << 32, ordering: .acquiringAndReleasing)
        let handedOut = old & 0xFFFF_FFFF
        // Writers between their fetch-add and `release`: a record write and a few atomics.
        while cells[Self.doneCell(liveHalf)].load(ordering: .acquiring) != handedOut { sched_yield() }
        liveHalf = next
        liveEpoch = epoch
    }

    /// XXH64 of a record's first 24 bytes, seeded by the boot key and the
    /// record's position in the journal (a record copied elsewhere fails).
    @inline(__always)
    static func checksum(_ record: UnsafeRawPointer, key: UInt64, position: Int) -> UInt64 {
        XXH64.hash(UnsafeRawBufferPointer(start: record, count: 24), seed: key ^ UInt64(position))
    }

    /// Every record of both halves that verifies under `key` and names an
    /// extent inside the disk (untrusted bytes: anything else is skipped).
    static func scan(_ file: PosixFile, layout: OverlayLayout, key: UInt64,
                     body: (JournalRecord) -> Void) throws(ImageError) {
        let halfSize = Int(OverlayLayout.journalHalfSize)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: halfSize, alignment: 4096)
        defer { buffer.deallocate() }
        let sectors = layout.capacity / OverlayLayout.sectorSize
        for half in 0..<2 {
            let offset = layout.journalRecordOffset(half: half, index: 0)
            let n = file.readFully(into: buffer, count: halfSize, at: offset)
            if n < 0 { throw .io(what: "read \(file.path) at \(offset)", errno: Int32(-n)) }
            memsetZero(buffer + n, halfSize - n)  // past the end of the file: no records
            for index in 0..<capacity {
                let r = buffer + index * OverlayLayout.journalRecordSize
                let stored = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
                let epoch = UInt64(littleEndian: r.loadUnaligned(as: UInt64.self))
                if stored == 0 && epoch == 0 { continue }  // never written
                guard stored == checksum(r, key: key, position: half * capacity + index) else { continue }
                let first = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                let count = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                guard count > 0, count <= sectors, first <= sectors - count else { continue }
                body(JournalRecord(epoch: epoch, first: first, count: count))
            }
        }
    }

    /// The key of this boot: XXH64 of /proc/sys/kernel/random/boot_id (a fixed
    /// value where that cannot be read: records then also replay after a reboot).
    static let bootKey: UInt64 = {
        var bytes = [UInt8](repeating: 0, count: 64)
        let fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0x5642_4A4E_4C30_3031 }
        defer { close(fd) }
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return 0x5642_4A4E_4C30_3031 }
        return XXH64.hash(Array(bytes[0..<n]), seed: 0x5642_4A4E_4C30_3031)
    }()

    /// Tests: pretend to be another boot.
    nonisolated(unsafe) static var bootKeyOverride: UInt64?
    static var currentBootKey: UInt64 { bootKeyOverride ?? bootKey }
}
