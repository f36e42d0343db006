import SystemSupport
import BlockBackends
import Foundation
import Glibc
import Synchronization
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// Drives an `Overlay` directly (no image): a synthetic base that reads as
/// 0xB5, writes of a per-sector pattern, reads through `readMerged`.
struct DirectOverlay {
    static let baseByte: UInt8 = 0xB5

    static func base(_ capacity: UInt64) -> OverlayBase {
        OverlayBase(logicalSize: capacity, chunkSize: 4096, contentDigest: 0x0123_4567_89AB_CDEF, name: "test-base")
    }

    /// What sector `sector` holds after `write(…, fill:)`.
    static func pattern(_ fill: UInt8, _ sector: UInt64) -> UInt8 {
        fill ^ UInt8(truncatingIfNeeded: sector &* 0x9E) | 1
    }

    static func write(_ overlay: Overlay, sector: UInt64, count: UInt64, fill: UInt8) -> Int32 {
        var bytes = [UInt8](repeating: 0, count: Int(count * 512))
        for i in 0..<Int(count) {
            let v = pattern(fill, sector + UInt64(i))
            for j in 0..<512 { bytes[i * 512 + j] = v }
        }
        let scratch = UnsafeMutablePointer<iovec>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        return bytes.withUnsafeMutableBytes { b -> Int32 in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            return overlay.write(offset: sector * 512, total: count * 512, iovecs: &iov, count: 1,
                                 scratch: scratch, scratchCount: 4)
        }
    }

    static func read(_ overlay: Overlay, sector: UInt64, count: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: Int(count * 512))
        let scratch = UnsafeMutablePointer<iovec>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        let baseBytes = [UInt8](repeating: baseByte, count: Int(count * 512))
        let rc = out.withUnsafeMutableBytes { b -> Int32 in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            var cursor = IovecCursor(&iov, count: 1)
            return baseBytes.withUnsafeBytes { src in
                overlay.readMerged(offset: sector * 512, total: count * 512, cursor: &cursor, scratch: scratch,
                                   scratchCount: 4) { from, to, c in
                    c.copyIn(from: src.baseAddress!, length: Int(to - from))
                    return 0
                }
            }
        }
        XCTAssertEqual(rc, 0)
        return out
    }

    /// Whether every sector of `[sector, sector + count)` reads as `fill`'s pattern (0: zeroes).
    static func holds(_ overlay: Overlay, sector: UInt64, count: UInt64, fill: UInt8?) -> Bool {
        let bytes = read(overlay, sector: sector, count: count)
        for i in 0..<Int(count) {
            let want = fill.map { $0 == 0 ? 0 : pattern($0, sector + UInt64(i)) } ?? baseByte
            for j in 0..<512 where bytes[i * 512 + j] != want { return false }
        }
        return true
    }
}

/// Zero loss after a daemon crash: every write, discard and write-zeroes that
/// completed reads back after the overlay is dropped without a final flush
/// (a SIGKILL: the page cache survives) and reopened.
final class OverlayJournalTests: XCTestCase {
    func testCompletedWriteSurvivesACrashWithoutFlush() throws {
        let dir = try TempDir()
        let base = makeRawImage(size: 256 << 10, seed: 41)
        let image = try packImage(base, in: dir)
        let overlayPath = dir.file("o")
        let data = [UInt8](repeating: 0x77, count: 8192)
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            let q = try QueueDriver(factory, depth: 4)
            XCTAssertEqual(q.write(65536, data), 8192)
            factory.simulateCrashOnClose()
        }
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
        let q = try QueueDriver(factory, depth: 4)
        XCTAssertTrue(q.read(65536, 8192).bytes == data, "a completed write reverted to the base after a crash")
        XCTAssertTrue(q.read(0, 65536).bytes == Array(base[0..<65536]))
    }

    func testCompletedWriteZeroesAndDiscardSurviveACrash() throws {
        let dir = try TempDir()
        let base = makeRawImage(size: 256 << 10, seed: 42)
        XCTAssertTrue(base[4096..<16384].contains { $0 != 0 } && base[131072..<139264].contains { $0 != 0 })
        let image = try packImage(base, in: dir)
        let overlayPath = dir.file("o")
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            let q = try QueueDriver(factory, depth: 4)
            // Partly flushed first: the crash must keep both the flushed and the journaled part.
            XCTAssertEqual(q.write(0, [UInt8](repeating: 3, count: 512)), 512)
            XCTAssertEqual(q.flush(), 0)
            XCTAssertEqual(q.writeZeroes(4096, 12288), 0)
            XCTAssertEqual(q.discard(131072, 8192), 0)
            factory.simulateCrashOnClose()
        }
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
        let q = try QueueDriver(factory, depth: 4)
        XCTAssertTrue(q.read(0, 512).bytes == [UInt8](repeating: 3, count: 512))
        XCTAssertTrue(q.read(4096, 12288).bytes == [UInt8](repeating: 0, count: 12288), "write-zeroes reverted")
        XCTAssertTrue(q.read(131072, 8192).bytes == [UInt8](repeating: 0, count: 8192), "discard reverted")
        XCTAssertTrue(q.read(16384, 4096).bytes == Array(base[16384..<20480]))
    }

    /// Four threads write at once across several map pages (64 MiB: 4 pages), one
    /// flushes now and then; after the crash every completed write reads back.
    func testConcurrentWritesAcrossMapPagesSurviveACrash() throws {
        let dir = try TempDir()
        let path = dir.file("o")
        let capacity: UInt64 = 64 << 20
        let sectors = capacity / 512
        let threads = 4, perThread = 600
        // Disjoint per thread: thread t owns sectors ≡ t (mod 4) in units of 8.
        var plans: [[(UInt64, UInt64, UInt8)]] = []
        var rng = TestRandom(seed: 43)
        for t in 0..<threads {
            var plan: [(UInt64, UInt64, UInt8)] = []
            for _ in 0..<perThread {
                let unit = UInt64(rng.below(Int(sectors / 32))) * 4 + UInt64(t)
                plan.append((unit * 8, UInt64(1 + rng.below(8)), UInt8(1 + rng.below(200))))
            }
            plans.append(plan)
        }
        let work = plans
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                for (i, (sector, count, fill)) in work[t].enumerated() {
                    XCTAssertEqual(DirectOverlay.write(overlay, sector: sector, count: count, fill: fill), Int32(count * 512))
                    if t == 0 && i % 150 == 75 { XCTAssertEqual(overlay.flush(), 0) }
                }
            }
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        // The last write to each sector wins (plans are disjoint between threads).
        var last: [UInt64: UInt8] = [:]
        for plan in plans { for (sector, count, fill) in plan { for s in sector..<(sector + count) { last[s] = fill } } }
        var lost = 0
        for (s, fill) in last where !DirectOverlay.holds(overlay, sector: s, count: 1, fill: fill) { lost += 1 }
        XCTAssertEqual(lost, 0, "\(lost) of \(last.count) written sectors lost by the crash")
        XCTAssertEqual(overlay.allocatedSectors, UInt64(last.count))
    }

    // MARK: the journal itself

    /// Writes a record as `OverlayJournal.append` would (for records no live overlay would write).
    private func plantRecord(_ path: String, _ layout: OverlayLayout, half: Int, index: Int, epoch: UInt64,
                             first: UInt64, count: UInt64, key: UInt64 = OverlayJournal.currentBootKey) {
        var record = (epoch.littleEndian, first.littleEndian, count.littleEndian, UInt64(0))
        withUnsafeMutableBytes(of: &record) { b in
            let sum = OverlayJournal.checksum(UnsafeRawPointer(b.baseAddress!), key: key,
                                              position: half * OverlayLayout.journalRecordsPerHalf + index)
            b.storeBytes(of: sum.littleEndian, toByteOffset: 24, as: UInt64.self)
            let fd = open(path, O_WRONLY)
            XCTAssertEqual(pwrite(fd, b.baseAddress, 32, off_t(layout.journalRecordOffset(half: half, index: index))), 32)
            close(fd)
        }
    }

    private func rawRecord(_ path: String, _ layout: OverlayLayout, half: Int, index: Int) throws -> [UInt8] {
        let file = try PosixFile.open(path, flags: O_RDONLY)
        return try file.read(count: 32, at: layout.journalRecordOffset(half: half, index: index))
    }

    func testTornLastRecordIsIgnoredAndTheEarlierOnesApplied() throws {
        let capacity: UInt64 = 4 << 20
        let layout = try OverlayLayout(capacity: capacity)
        for truncateInstead in [false, true] {
            let dir = try TempDir()
            let path = dir.file("o")
            do {
                let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
                for i in 0..<5 {
                    XCTAssertEqual(DirectOverlay.write(overlay, sector: UInt64(i) * 100, count: 8, fill: UInt8(10 + i)), 4096)
                }
                overlay.abandoned.store(true, ordering: .relaxed)
            }
            // A fresh overlay journals epoch 2 into half 0, in order.
            XCTAssertNotEqual(try rawRecord(path, layout, half: 0, index: 4), [UInt8](repeating: 0, count: 32))
            XCTAssertEqual(try rawRecord(path, layout, half: 0, index: 5), [UInt8](repeating: 0, count: 32))
            if truncateInstead {
                // The file ends inside the last record.
                XCTAssertEqual(truncate(path, off_t(layout.journalRecordOffset(half: 0, index: 4) + 20)), 0)
            } else {
                let fd = open(path, O_WRONLY)
                var junk: UInt8 = 0x5C
                XCTAssertEqual(pwrite(fd, &junk, 1, off_t(layout.journalRecordOffset(half: 0, index: 4) + 9)), 1)
                close(fd)
            }
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(overlay.replayedRecords, 4)
            for i in 0..<4 {
                XCTAssertTrue(DirectOverlay.holds(overlay, sector: UInt64(i) * 100, count: 8, fill: UInt8(10 + i)), "record \(i)")
            }
            // The torn record's write: as if it never completed (the base shows).
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 400, count: 8, fill: nil))
            XCTAssertEqual(overlay.allocatedSectors, 32)
        }
    }

    func testRecordsCoveredByAFlushAreStale() throws {
        let capacity: UInt64 = 4 << 20
        let layout = try OverlayLayout(capacity: capacity)
        let dir = try TempDir()
        let path = dir.file("o")
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 0, count: 8, fill: 1), 4096)    // epoch 2, half 0
            XCTAssertEqual(overlay.flush(), 0)                                                   // slot 2
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 64, count: 8, fill: 2), 4096)   // epoch 3, half 1
            XCTAssertEqual(overlay.flush(), 0)                                                   // slot 3
            XCTAssertEqual(overlay.generation, 3)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        do {
            // Both records are left over from before the flushes: nothing to replay, nothing to flush.
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(overlay.replayedRecords, 0)
            XCTAssertEqual(overlay.generation, 3)
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 0, count: 8, fill: 1))
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 64, count: 8, fill: 2))
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        // A record of an old epoch is ignored even where it names sectors the
        // map does not hold (a real one's sectors are always in the slot that
        // covers it): epoch 3 <= slot 3. One of epoch 4 is applied.
        plantRecord(path, layout, half: 0, index: 7, epoch: 3, first: 1000, count: 4)
        plantRecord(path, layout, half: 1, index: 9, epoch: 4, first: 2000, count: 2)
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertEqual(overlay.replayedRecords, 1)
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 1000, count: 4, fill: nil), "a stale record was applied")
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 2000, count: 2, fill: 0))  // a hole in the overlay: zeroes
        XCTAssertEqual(overlay.allocatedSectors, 18)
        // The replay was flushed into a slot that outnumbers every record.
        XCTAssertEqual(overlay.generation, 4)
    }

    func testRecordsFromEpochsNoSlotCanPrecedeAreNotAppliedButOutnumbered() throws {
        let capacity: UInt64 = 4 << 20
        let layout = try OverlayLayout(capacity: capacity)
        let dir = try TempDir()
        let path = dir.file("o")
        _ = try Overlay.open(path: path, base: DirectOverlay.base(capacity))   // slot 0 at generation 1
        plantRecord(path, layout, half: 0, index: 0, epoch: 9, first: 8, count: 8)
        plantRecord(path, layout, half: 0, index: 1, epoch: 2, first: 16, count: 8)
        plantRecord(path, layout, half: 0, index: 2, epoch: MapSlotHeader.generationLimit, first: 24, count: 8)
        plantRecord(path, layout, half: 0, index: 3, epoch: 2, first: (capacity / 512) - 4, count: 8)  // past the end
        plantRecord(path, layout, half: 0, index: 4, epoch: 2, first: 40, count: 8, key: 77)          // another boot
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(overlay.replayedRecords, 1)
            XCTAssertEqual(overlay.allocatedSectors, 8)
            XCTAssertEqual(overlay.generation, 9)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        // Epoch 9 is now covered by slot 9: it never applies later either.
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertEqual(overlay.replayedRecords, 0)
        XCTAssertEqual(overlay.allocatedSectors, 8)
    }

    /// A power loss (the next open is another boot): the records are not
    /// trusted, the data they cover may never have reached the disk. What was
    /// flushed survives; what was not reads as the base (as before the journal).
    func testRecordsOfAnotherBootAreIgnored() throws {
        let capacity: UInt64 = 4 << 20
        let dir = try TempDir()
        let path = dir.file("o")
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 0, count: 8, fill: 1), 4096)
            XCTAssertEqual(overlay.flush(), 0)
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 64, count: 8, fill: 2), 4096)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        OverlayJournal.bootKeyOverride = 0xB007_0001
        defer { OverlayJournal.bootKeyOverride = nil }
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertEqual(overlay.replayedRecords, 0)
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 0, count: 8, fill: 1))
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 64, count: 8, fill: nil))
    }

    /// A crash in the middle of a flush: the slot being written is torn, and
    /// the records of both the epoch it would have covered and the one
    /// started for the slot after it are applied on top of the older slot.
    func testCrashDuringAFlushKeepsBothEpochs() throws {
        let capacity: UInt64 = 4 << 20
        let layout = try OverlayLayout(capacity: capacity)
        let dir = try TempDir()
        let path = dir.file("o")
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 0, count: 8, fill: 1), 4096)    // epoch 2, half 0
            XCTAssertEqual(overlay.flush(), 0)                                                   // slot 1: generation 2
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 64, count: 8, fill: 2), 4096)   // epoch 3, half 1
            XCTAssertEqual(overlay.flush(), 0)                                                   // slot 0: generation 3
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 128, count: 8, fill: 3), 4096)  // epoch 4, half 0
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        // Slot 0 (generation 3) torn as if that flush had crashed: the newest intact slot is 2.
        let fd = open(path, O_WRONLY)
        var junk = [UInt8](repeating: 0xFF, count: 64)
        XCTAssertEqual(pwrite(fd, &junk, 64, off_t(layout.pageOffset(slot: 0, page: 0) + 300)), 64)
        close(fd)
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertNotNil(overlay.recoveryNote)
        XCTAssertEqual(overlay.replayedRecords, 2)
        for (sector, fill) in [(UInt64(0), UInt8(1)), (64, 2), (128, 3)] {
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: sector, count: 8, fill: fill), "sector \(sector)")
        }
    }

    /// More writes that set new bits than a journal half holds: one forced
    /// flush, nothing lost across the crash that follows.
    func testFullJournalForcesAFlushAndLosesNothing() throws {
        let capacity: UInt64 = 128 << 20
        let dir = try TempDir()
        let path = dir.file("o")
        let records = OverlayLayout.journalRecordsPerHalf + 1000
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            for i in 0..<records {
                // Every other sector: each op sets a new bit (zeroes are cheap; some writes for content).
                if i % 4096 == 0 {
                    XCTAssertEqual(DirectOverlay.write(overlay, sector: UInt64(2 * i), count: 1, fill: 9), 512)
                } else {
                    XCTAssertEqual(overlay.zero(offset: UInt64(2 * i) * 512, length: 512), 0)
                }
            }
            XCTAssertEqual(overlay.journalForcedFlushes.load(ordering: .relaxed), 1)
            XCTAssertEqual(overlay.generation, 2)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertEqual(overlay.replayedRecords, 1000)
        XCTAssertEqual(overlay.allocatedSectors, UInt64(records))
        for i in stride(from: 0, to: records, by: 4096) {
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: UInt64(2 * i), count: 1, fill: 9))
        }
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: UInt64(2 * (records - 1)), count: 1, fill: 0))
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 1, count: 1, fill: nil))
    }

    /// Four threads fill the journal at once (several may find it full
    /// together): forced flushes, then a crash; every op is still there.
    func testConcurrentWritersOverflowingTheJournalLoseNothing() throws {
        let capacity: UInt64 = 128 << 20
        let dir = try TempDir()
        let path = dir.file("o")
        let threads = 4, perThread = OverlayLayout.journalRecordsPerHalf / 3
        do {
            let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                for i in 0..<perThread {
                    let sector = UInt64(2 * (i * threads + t))
                    XCTAssertEqual(overlay.zero(offset: sector * 512, length: 512), 0)
                }
            }
            XCTAssertGreaterThanOrEqual(overlay.journalForcedFlushes.load(ordering: .relaxed), 1)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        let overlay = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        XCTAssertGreaterThan(overlay.replayedRecords, 0)
        XCTAssertEqual(overlay.allocatedSectors, UInt64(threads * perThread))
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 1, count: 1, fill: nil))
    }

    /// A version 1 overlay (no journal; superblock spelled out byte by byte as
    /// docs/zstd-image-format.md had it) opens, reads back, and is upgraded.
    func testVersion1OverlayOpensAndIsUpgraded() throws {
        let capacity: UInt64 = 3 << 20
        let layout = try OverlayLayout(capacity: capacity)
        let base = DirectOverlay.base(capacity)
        let dir = try TempDir()
        let path = dir.file("o")
        do {
            let overlay = try Overlay.open(path: path, base: base)
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 10, count: 30, fill: 5), 30 * 512)
            XCTAssertEqual(overlay.flush(), 0)
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 100, count: 1, fill: 6), 512)
        }
        // Back to version 1: its superblock, its length.
        var w = ByteWriter()
        w.raw(Array("VBZOVL01".utf8)); w.u32(1); w.u32(512); w.u64(capacity)
        w.u64(base.logicalSize); w.u32(UInt32(base.chunkSize)); w.u32(0); w.u64(base.contentDigest)
        w.u32(UInt32(layout.pageCount)); w.u32(0); w.u64(layout.slotOffsets[0]); w.u64(layout.slotOffsets[1])
        w.u64(layout.slotSize); w.u64(layout.dataOffset)
        XCTAssertEqual(w.bytes.count, 88)
        w.u64(XXH64.hash(w.bytes))
        w.zeros(4096 - 96)
        let file = try PosixFile.open(path, flags: O_RDWR)
        try file.write(w.bytes, at: 0)
        try file.truncate(to: layout.version1FileSize)
        do {
            let overlay = try Overlay.open(path: path, base: base)
            XCTAssertEqual(overlay.openedVersion, 1)
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 10, count: 30, fill: 5))
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 100, count: 1, fill: 6))
            XCTAssertTrue(DirectOverlay.holds(overlay, sector: 0, count: 10, fill: nil))
            XCTAssertEqual(try file.size(), layout.fileSize)
            // Upgraded: the journal works at once.
            XCTAssertEqual(DirectOverlay.write(overlay, sector: 200, count: 2, fill: 7), 1024)
            overlay.abandoned.store(true, ordering: .relaxed)
        }
        let overlay = try Overlay.open(path: path, base: base)
        XCTAssertEqual(overlay.openedVersion, 2)
        XCTAssertEqual(overlay.replayedRecords, 1)
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 200, count: 2, fill: 7))
        XCTAssertTrue(DirectOverlay.holds(overlay, sector: 10, count: 30, fill: 5))
        XCTAssertEqual(overlay.allocatedSectors, 33)
    }

    /// An overlay of an unknown later version is refused, not misread.
    func testUnknownVersionIsRefused() throws {
        let capacity: UInt64 = 1 << 20
        let dir = try TempDir()
        let path = dir.file("o")
        _ = try Overlay.open(path: path, base: DirectOverlay.base(capacity))
        var bytes = try PosixFile.open(path, flags: O_RDONLY).read(count: 4096, at: 0)
        bytes[8] = 3
        let sum = XXH64.hash(Array(bytes[0..<104]))
        withUnsafeBytes(of: sum.littleEndian) { for i in 0..<8 { bytes[104 + i] = $0[i] } }
        try PosixFile.open(path, flags: O_RDWR).write(bytes, at: 0)
        assertImageError(try Overlay.open(path: path, base: DirectOverlay.base(capacity)),
                         { if case .unsupported = $0 { return true }; return false })
    }
}
