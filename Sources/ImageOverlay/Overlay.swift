import CSys
import BlockBackends
import Glibc
import SystemSupport
import Synchronization

/// A writable overlay over a read-only base image: a sparse file whose data
/// area mirrors the disk's byte offsets, plus a persisted allocation map
/// saying which sectors the overlay holds (see docs/zstd-image-format.md).
/// Owns the file (locked against other processes), the in-memory map, and
/// the flush machinery.
///
/// Crash safety: `flush()` snapshots the changed map pages, fdatasyncs the
/// data, then writes the snapshot into the older of two map slots (generation
/// + 1, per-page and header checksums) and fdatasyncs again. A slot torn by a
/// crash fails its checksums on open and the other, older slot is used.
/// Between flushes, every write that sets new map bits first appends a record
/// to the map journal (`OverlayJournal`, one pwrite into the page cache), so a
/// daemon crash loses no completed write: open applies the records on top of
/// the newest slot.
/// Everything below `flushLock` is guarded by it; the map and the journal's
/// write path are lock-free.
public final class Overlay: @unchecked Sendable {
    public let path: String
    public let file: PosixFile
    public let layout: OverlayLayout
    public let map: OverlayMap
    /// Set on open when a damaged map slot was passed over (worth a warning).
    public let recoveryNote: String?
    /// Data was written since the last flush.
    public let dataWritten = Atomic<Bool>(false)
    /// Skip the final flush on deinit (tests simulating a crash).
    public let abandoned = Atomic<Bool>(false)
    /// The superblock version the file had when opened (1: upgraded to 2 by this open).
    public let openedVersion: UInt32
    /// Journal records applied by this open (written after the last flush by a process that did not flush again).
    public let replayedRecords: Int
    let journal: OverlayJournal

    private let flushLock = Monitor()
    private var generations: [UInt64]
    /// Per slot, the XXH64 of each page as last written there.
    private var tables: [[UInt64]]
    private let staging: UnsafeMutableRawPointer
    private let stagedPages: UnsafeMutablePointer<Int32>
    private let headerBuffer: UnsafeMutableRawPointer
    /// Source of the zero writes where punching a hole is refused: one
    /// read-only buffer for every overlay in the process.
    nonisolated(unsafe) private static let zeroes: UnsafeRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: zeroesSize, alignment: 4096)
        memset(p, 0, zeroesSize)
        return UnsafeRawPointer(p)
    }()
    public static let zeroesSize = 256 << 10
    private let punchHoleWorks = Atomic<Bool>(true)

    private init(path: String, file: PosixFile, layout: OverlayLayout, map: OverlayMap,
                 generations: [UInt64], tables: [[UInt64]], recoveryNote: String?, journal: OverlayJournal,
                 openedVersion: UInt32, replayedRecords: Int) {
        self.path = path
        self.file = file
        self.layout = layout
        self.map = map
        self.generations = generations
        self.tables = tables
        self.recoveryNote = recoveryNote
        self.journal = journal
        self.openedVersion = openedVersion
        self.replayedRecords = replayedRecords
        staging = .allocate(byteCount: max(1, layout.pageCount) * OverlayLayout.blockSize, alignment: 4096)
        stagedPages = .allocate(capacity: max(1, layout.pageCount))
        headerBuffer = .allocate(byteCount: layout.slotHeaderRegion, alignment: 4096)
    }

    deinit {
        if !abandoned.load(ordering: .relaxed) { _ = flush() }
        staging.deallocate()
        stagedPages.deallocate()
        headerBuffer.deallocate()
    }

    /// Opens the overlay at `path` over `baseImage`, creating it if missing.
    public static func open(path: String, base baseImage: OverlayBase) throws(ImageError) -> Overlay {
        if access(path, F_OK) != 0 { try create(path: path, base: baseImage) }
        let file = try PosixFile.openImage(path, flags: O_RDWR)
        if flock(file.fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EWOULDBLOCK { throw .overlayBusy(path: path) }
            throw .io(what: "flock \(path)", errno: errno)
        }
        let size = try file.size()
        let superblock = try OverlaySuperblock.decode(
            try readOrCorrupt(file, count: OverlayLayout.superblockSize, at: 0, what: "superblock"), path: path)
        let base = baseImage.identity
        guard superblock.base == base else {
            throw .overlayMismatch("\(path) was made for a base of \(superblock.base); \(baseImage.name) has \(base)")
        }
        let layout = superblock.layout
        guard layout.capacity == baseImage.logicalSize else {
            throw .overlayMismatch("\(path) covers \(layout.capacity) bytes, the image has \(baseImage.logicalSize)")
        }
        guard size >= layout.dataOffset else {
            throw .overlayCorrupt("\(path) is \(size) bytes, its map slots end at \(layout.dataOffset)")
        }
        // Version 2 adds the journal after the data area; a version 1 file
        // gains it here (holes: no records) and its superblock is upgraded below.
        if size < layout.fileSize { try file.truncate(to: layout.fileSize) }

        let map = OverlayMap(sectorCount: layout.capacity / OverlayLayout.sectorSize, pageCount: layout.pageCount)
        let page = UnsafeMutableRawPointer.allocate(byteCount: OverlayLayout.blockSize, alignment: 4096)
        defer { page.deallocate() }
        var slots: [Result<MapSlotHeader, MapSlotDamage>] = []
        for s in 0..<2 { slots.append(validateSlot(s, file: file, layout: layout, page: page)) }
        let valid = (0..<2).compactMap { s -> (Int, MapSlotHeader)? in
            if case .success(let h) = slots[s] { return (s, h) }
            return nil
        }
        guard let chosen = valid.max(by: { $0.1.generation < $1.1.generation }) else {
            throw .overlayCorrupt("\(path): both allocation-map slots are damaged (slot 0: \(reason(slots[0])); slot 1: \(reason(slots[1])))")
        }
        let other = 1 - chosen.0
        var note: String?
        if case .failure(let damage) = slots[other] {
            note = "overlay \(path): map slot \(other) is damaged (\(damage.reason)), probably by a crash during a flush; "
                + "using slot \(chosen.0), generation \(chosen.1.generation)"
        }
        for p in 0..<layout.pageCount {
            try file.read(into: page, count: OverlayLayout.blockSize, at: layout.pageOffset(slot: chosen.0, page: p))
            map.loadPage(p, from: page)
        }
        // Bits past the disk's end can only come from a damaged (or foreign) map.
        guard !map.hasBitsPastEnd() else {
            throw .overlayCorrupt("\(path): the allocation map marks sectors past the end of the disk")
        }
        map.markAllDirty(slot: other)
        var generations = [UInt64](repeating: 0, count: 2)
        generations[chosen.0] = chosen.1.generation
        var tables = [[UInt64]](repeating: [UInt64](repeating: 0, count: layout.pageCount), count: 2)
        tables[chosen.0] = chosen.1.table

        // The journal: records of this boot not covered by the chosen slot.
        // Epoch c + 1 was live when the process stopped, c + 2 too if it
        // stopped inside a flush (whose slot c + 1 then may be torn). Bits are
        // only ever set, so the order of the records does not matter. A newer
        // epoch cannot come from this file's history (its slot would be intact):
        // such a record is not applied, but the slot written below outnumbers it.
        let newest = chosen.1.generation
        let key = OverlayJournal.currentBootKey
        var replayed = 0, highest: UInt64 = 0
        if superblock.version >= 2 {
            try OverlayJournal.scan(file, layout: layout, key: key) { record in
                guard record.epoch > newest else { return }  // covered by the slot
                if record.epoch <= newest + 2 {
                    map.set(from: record.first, count: record.count)
                    replayed += 1
                } else if record.epoch >= MapSlotHeader.generationLimit {
                    return  // no slot could outnumber it, and none ever precedes it
                }
                highest = max(highest, record.epoch)
            }
        } else {
            try upgrade(file, superblock: superblock)
        }
        let journal = OverlayJournal(layout: layout, key: key, epoch: newest + 1)
        let overlay = Overlay(path: path, file: file, layout: layout, map: map, generations: generations, tables: tables,
                              recoveryNote: note, journal: journal, openedVersion: superblock.version,
                              replayedRecords: replayed)
        if highest > 0 {
            // Make what the records say durable in a slot that outnumbers every
            // record, before this process appends any (it starts with the half
            // the records are in).
            let rc = overlay.flushLocked(force: true, minimumGeneration: highest)
            if rc != 0 {
                overlay.abandoned.store(true, ordering: .relaxed)
                throw .io(what: "flush \(path) after applying its map journal", errno: -rc)
            }
        }
        return overlay
    }

    /// Rewrites a version 1 superblock as version 2 (the journal region, past
    /// the old end of the file, reads as zeroes: empty). One 4 KiB write at
    /// offset 0 whose checked bytes lie in the first 512-byte sector.
    private static func upgrade(_ file: PosixFile, superblock: OverlaySuperblock) throws(ImageError) {
        var upgraded = superblock
        upgraded.version = OverlaySuperblock.version
        try file.sync()  // the longer file first
        try file.write(upgraded.encoded(), at: 0)
        try file.sync()
    }

    private static func reason(_ r: Result<MapSlotHeader, MapSlotDamage>) -> String {
        if case .failure(let d) = r { return d.reason }
        return "intact"
    }

    private static func readOrCorrupt(_ file: PosixFile, count: Int, at offset: UInt64,
                                      what: String) throws(ImageError) -> [UInt8] {
        do { return try file.read(count: count, at: offset) } catch {
            if case .truncated = error { throw .overlayCorrupt("\(file.path): \(what) truncated") }
            throw error
        }
    }

    /// Checks slot `s` completely: header, table and every page checksum.
    private static func validateSlot(_ s: Int, file: PosixFile, layout: OverlayLayout,
                                     page: UnsafeMutableRawPointer) -> Result<MapSlotHeader, MapSlotDamage> {
        let headerBytes: [UInt8]
        do { headerBytes = try file.read(count: layout.slotHeaderRegion, at: layout.slotOffsets[s]) } catch {
            return .failure(MapSlotDamage(reason: error.description))
        }
        let header: MapSlotHeader
        switch MapSlotHeader.decode(headerBytes, slot: s, pageCount: layout.pageCount) {
        case .success(let h): header = h
        case .failure(let d): return .failure(d)
        }
        for p in 0..<layout.pageCount {
            do {
                try file.read(into: page, count: OverlayLayout.blockSize, at: layout.pageOffset(slot: s, page: p))
            } catch {
                return .failure(MapSlotDamage(reason: error.description))
            }
            let sum = XXH64.hash(UnsafeRawBufferPointer(start: page, count: OverlayLayout.blockSize))
            if sum != header.table[p] {
                return .failure(MapSlotDamage(reason: "generation \(header.generation), page \(p) fails its checksum (torn write)"))
            }
        }
        return .success(header)
    }

    /// Writes a fresh overlay over `base` at `path` (via a temporary name).
    private static func create(path: String, base: OverlayBase) throws(ImageError) {
        let layout = try OverlayLayout(capacity: base.logicalSize)
        let superblock = OverlaySuperblock(layout: layout, base: base.identity)
        let partial = path + ".partial"
        let file = try PosixFile.open(partial, flags: O_RDWR | O_CREAT | O_TRUNC)
        do throws(ImageError) {
            try file.write(superblock.encoded(), at: 0)
            try file.truncate(to: layout.fileSize)  // data area and journal: holes
            let zeroPage = XXH64.hash([UInt8](repeating: 0, count: OverlayLayout.blockSize))
            let table = [UInt64](repeating: zeroPage, count: layout.pageCount)
            // Both slots valid from the start (the pages are holes: zeroes).
            for s in 0..<2 {
                let header = MapSlotHeader(generation: UInt64(1 - s), slot: s, table: table)
                try file.write(header.encoded(region: layout.slotHeaderRegion), at: layout.slotOffsets[s])
            }
            try file.sync()
            try PosixFile.rename(partial, to: path)
            try PosixFile.syncDirectory(of: path)
        } catch {
            unlink(partial)
            throw error
        }
    }

    /// Makes every completed write durable: 0, or a negated errno.
    public func flush() -> Int32 {
        flushLock.lock()
        defer { flushLock.unlock() }
        return flushLocked(force: false)
    }

    /// `flush()` under the lock. `force` writes a map slot even when nothing
    /// changed (to start a fresh journal half); the slot's generation is at
    /// least `minimumGeneration`.
    private func flushLocked(force: Bool, minimumGeneration: UInt64 = 0) -> Int32 {
        let mapChanged = map.changed.exchange(false, ordering: .acquiringAndReleasing) || force
        let hadData = dataWritten.exchange(false, ordering: .acquiringAndReleasing)
        guard mapChanged || hadData else { return 0 }
        let target = generations[0] <= generations[1] ? 0 : 1
        let generation = max(max(generations[0], generations[1]) + 1, minimumGeneration)
        var staged = 0
        if mapChanged {
            // New records go to the other half, for the slot after this one;
            // writers still in the old half finish setting their bits first.
            journal.begin(epoch: generation + 1)
            // Snapshot before syncing the data: every bit in the snapshot covers
            // data written before the fdatasync below.
            for p in 0..<layout.pageCount where map.takeDirty(page: p, slot: target) {
                map.copyPage(p, to: staging + staged * OverlayLayout.blockSize)
                stagedPages[staged] = Int32(p)
                staged += 1
            }
        }
        var rc = file.syncData()
        if rc == 0 && mapChanged {
            rc = writeSlot(target, staged: staged, generation: generation)
        }
        if rc != 0 {
            // Try everything again next time.
            if mapChanged {
                map.markAllDirty(slot: target)
                map.changed.store(true, ordering: .releasing)
            }
            dataWritten.store(true, ordering: .releasing)
        }
        return rc
    }

    /// Writes the staged pages, then the header and table, into slot `target`, and syncs.
    private func writeSlot(_ target: Int, staged: Int, generation: UInt64) -> Int32 {
        for i in 0..<staged {
            let p = Int(stagedPages[i])
            let page = staging + i * OverlayLayout.blockSize
            tables[target][p] = XXH64.hash(UnsafeRawBufferPointer(start: page, count: OverlayLayout.blockSize))
            let n = file.writeFully(page, count: OverlayLayout.blockSize, at: layout.pageOffset(slot: target, page: p))
            if n < 0 { return Int32(n) }
        }
        // Only an overlay opened at generation 2^48 - 1 gets here (a crafted
        // one): fail the flush rather than write a slot no open accepts.
        guard generation < MapSlotHeader.generationLimit else { return -EOVERFLOW }
        MapSlotHeader.encode(generation: generation, slot: target, table: tables[target], into: headerBuffer,
                             region: layout.slotHeaderRegion)
        let n = file.writeFully(headerBuffer, count: layout.slotHeaderRegion, at: layout.slotOffsets[target])
        if n < 0 { return Int32(n) }
        let rc = file.syncData()
        if rc == 0 { generations[target] = generation }
        return rc
    }

    /// Makes `[offset, offset + length)` of the disk read as zeroes in the
    /// overlay (punching a hole, or writing zeroes where that is refused) and
    /// marks it allocated: 0, or a negated errno.
    public func zeroRange(offset: UInt64, length: UInt64) -> Int32 {
        let start = layout.dataOffset + offset
        var rc: Int32 = -EOPNOTSUPP
        if punchHoleWorks.load(ordering: .relaxed) {
            do {
                _ = try sysCall("fallocate", returnsNegatedErrno: true) {
                    vb_io_fallocate(file.fd, Int32(VB_FALLOC_PUNCH_HOLE | VB_FALLOC_KEEP_SIZE), start, length)
                }
                rc = 0
            } catch {
                rc = error.negated
            }
            if rc == -EOPNOTSUPP { punchHoleWorks.store(false, ordering: .relaxed) }
        }
        if rc == -EOPNOTSUPP {
            rc = 0
            var done: UInt64 = 0
            while done < length && rc == 0 {
                let n = Int(min(UInt64(Self.zeroesSize), length - done))
                let written = file.writeFully(Self.zeroes, count: n, at: start + done)
                if written < 0 { rc = Int32(written) }
                done += UInt64(n)
            }
        }
        guard rc == 0 else { return rc }
        return noteWritten(offset: offset, length: length)
    }

    /// Marks `[offset, offset + length)` written, after the data went to the
    /// file and before the op completes: 0, or a negated errno (the bits were
    /// not set then: the sectors keep reading as before, or as the new data).
    ///
    /// Sectors already allocated need nothing (whoever set their bits wrote
    /// a record first, or a map slot holds them). Otherwise a journal record
    /// goes to the page cache first, then the bits are set; a full journal
    /// forces a map flush (which starts the other half) and a retry.
    public func noteWritten(offset: UInt64, length: UInt64) -> Int32 {
        dataWritten.store(true, ordering: .releasing)
        let first = offset / OverlayLayout.sectorSize, count = length / OverlayLayout.sectorSize
        if count == 0 || map.allSet(from: first, count: count) { return 0 }
        while true {
            if let ticket = journal.reserve() {
                let rc = journal.append(ticket, first: first, count: count, fd: file.fd)
                if rc == 0 { map.set(from: first, count: count) }
                journal.release(ticket)
                return rc
            }
            let rc = flushForFullJournal()
            if rc != 0 { return rc }
        }
    }

    /// The live journal half is full: a flush that writes a map slot and moves
    /// to the other half, unless another writer's flush did so meanwhile.
    private func flushForFullJournal() -> Int32 {
        flushLock.lock()
        defer { flushLock.unlock() }
        guard journal.isFull else { return 0 }
        journalForcedFlushes.wrappingAdd(1, ordering: .relaxed)
        return flushLocked(force: true)
    }

    /// Flushes forced by a full journal (statistics, tests).
    public let journalForcedFlushes = Atomic<Int>(0)

    /// For fuzz-overlay: sectors the map covers, and whether it marks any past them.
    @_spi(Fuzzing) public var mapSectorCount: UInt64 { map.sectorCount }
    @_spi(Fuzzing) public var mapHasBitsPastEnd: Bool { map.hasBitsPastEnd() }

    /// Generation of the newest map slot on disk.
    public var generation: UInt64 {
        flushLock.withLock { max(generations[0], generations[1]) }
    }
}
