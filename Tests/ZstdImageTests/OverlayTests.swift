import SystemSupport
import BlockBackends
import Glibc
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// What the disk must read as, across flushes and "daemon restarts".
struct DiskModel {
    /// What reads return now.
    var current: [UInt8]
    /// What was made durable by the last acknowledged flush.
    var durable: [UInt8]
    /// Sectors written, discarded or zeroed since the last flush.
    var touched: Set<Int> = []

    init(_ base: [UInt8]) {
        current = base
        durable = base
    }

    mutating func store(_ offset: Int, _ bytes: [UInt8]) {
        current.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        for s in (offset / 512)..<((offset + bytes.count) / 512) { touched.insert(s) }
    }

    mutating func flushed() {
        durable = current
        touched.removeAll()
    }

    /// After a daemon crash (the page cache survives it): every completed
    /// write, discard and write-zeroes reads back, flushed or not (the map
    /// journal). Adopts what the disk reads.
    mutating func checkAfterCrash(_ disk: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        for s in 0..<(current.count / 512) where !sameBytes(disk, current, s * 512..<(s + 1) * 512) {
            let flushed = touched.contains(s) ? "" : " (flushed)"
            XCTFail("sector \(s)\(flushed), written before the crash, does not read back", file: file, line: line)
            break
        }
        current = disk
        flushed()
    }
}

final class OverlayTests: XCTestCase {
    private func readAll(_ queue: QueueDriver, _ size: Int) -> [UInt8] {
        let (result, bytes) = queue.read(0, size)
        XCTAssertEqual(result, Int32(size))
        return bytes
    }

    func testRandomOpsMatchTheModelAcrossRestartsAndCrashes() throws {
        let dir = try TempDir(label: "zstd")
        let size = 1 << 20
        let base = makeRawImage(size: size, seed: 21)
        let image = try packImage(base, in: dir)
        let overlayPath = dir.file("disk.overlay")
        var model = DiskModel(base)
        var rng = TestRandom(seed: 22)
        for round in 0..<8 {
            let crash = round % 2 == 1
            do {
                let factory = try ZstdBackendFactory(options: ZstdBackendOptions(
                    imagePath: image, overlayPath: overlayPath, cacheBytes: round % 3 == 0 ? 0 : 256 << 10))
                XCTAssertFalse(factory.geometry.readOnly)
                XCTAssertTrue(factory.geometry.supportsDiscard)
                XCTAssertNil(factory.recoveryNote)
                // Two queues, as a multi-queue device would use.
                let queues = [try QueueDriver(factory, queueIndex: 0, depth: 4), try QueueDriver(factory, queueIndex: 1, depth: 4)]
                if round > 0 { model.checkAfterCrash(readAll(queues[0], size)) }
                for _ in 0..<400 {
                    let q = queues[rng.below(2)]
                    let sector = rng.below(size / 512)
                    let sectors = min(size / 512 - sector, 1 + rng.below(rng.below(4) == 0 ? 300 : 20))
                    let offset = sector * 512, length = sectors * 512
                    switch rng.below(10) {
                    case 0...3:
                        let (result, bytes) = q.read(UInt64(offset), length)
                        XCTAssertEqual(result, Int32(length))
                        XCTAssertTrue(sameBytes(bytes, 0, model.current, offset, length),
                                      "round \(round): read at \(offset)+\(length) differs")
                    case 4...6:
                        let data = rng.bytes(length)
                        XCTAssertEqual(q.write(UInt64(offset), data), Int32(length))
                        model.store(offset, data)
                    case 7:
                        XCTAssertEqual(q.discard(UInt64(offset), UInt64(length)), 0)
                        model.store(offset, [UInt8](repeating: 0, count: length))
                    case 8:
                        XCTAssertEqual(q.writeZeroes(UInt64(offset), UInt64(length)), 0)
                        model.store(offset, [UInt8](repeating: 0, count: length))
                    default:
                        XCTAssertEqual(q.flush(), 0)
                        model.flushed()
                    }
                }
                XCTAssertTrue(readAll(queues[1], size) == model.current)
                if crash {
                    factory.simulateCrashOnClose()
                } else {
                    // A clean stop flushes.
                    model.flushed()
                }
            }
        }
        // The base image itself was never touched.
        XCTAssertEqual(try ImageVerifier.verify(path: image).chunks, 256)
    }

    func testAcknowledgedFlushSurvivesACrash() throws {
        let dir = try TempDir(label: "zstd")
        let base = makeRawImage(size: 256 << 10, seed: 23)
        let image = try packImage(base, in: dir)
        let overlayPath = dir.file("o")
        let flushed = [UInt8](repeating: 0x5A, count: 8192)
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            let q = try QueueDriver(factory, depth: 4)
            XCTAssertEqual(q.write(4096, flushed), 8192)
            XCTAssertEqual(q.flush(), 0)
            XCTAssertEqual(q.write(65536, [UInt8](repeating: 0x77, count: 512)), 512)  // never flushed
            factory.simulateCrashOnClose()
        }
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
        let q = try QueueDriver(factory, depth: 4)
        XCTAssertTrue(q.read(4096, 8192).bytes == flushed)
        // Not covered by a flush, but completed: the map journal kept it.
        XCTAssertTrue(q.read(65536, 512).bytes == [UInt8](repeating: 0x77, count: 512))
        XCTAssertTrue(q.read(0, 4096).bytes == Array(base[0..<4096]))
    }

    func testOverlayRefusesAnotherBase() throws {
        let dir = try TempDir(label: "zstd")
        let a = try packImage(makeRawImage(size: 64 << 10, seed: 24), in: dir, name: "a")
        let b = try packImage(makeRawImage(size: 64 << 10, seed: 25), in: dir, name: "b")
        let overlayPath = dir.file("o")
        _ = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: a, overlayPath: overlayPath))
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: b, overlayPath: overlayPath)),
                         { if case .overlayMismatch = $0 { return true }; return false })
        // Not an overlay at all.
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: a, overlayPath: b)),
                         { if case .overlayCorrupt = $0 { return true }; return false })
    }

    func testOverlayIsLockedAgainstASecondUser() throws {
        let dir = try TempDir(label: "zstd")
        let image = try packImage(makeRawImage(size: 64 << 10, seed: 26), in: dir)
        let overlayPath = dir.file("o")
        let first = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath)),
                         { $0 == .overlayBusy(path: overlayPath) })
        _ = first
    }

    /// Corrupts one map page of slot `slot`.
    private func tearPage(_ overlayPath: String, capacity: UInt64, slot: Int, page: Int = 0) throws {
        let layout = try OverlayLayout(capacity: capacity)
        let fd = open(overlayPath, O_WRONLY)
        defer { close(fd) }
        var junk = [UInt8](repeating: 0xFF, count: 100)
        XCTAssertEqual(pwrite(fd, &junk, junk.count, off_t(layout.pageOffset(slot: slot, page: page) + 200)), 100)
    }

    func testTornMapSlotIsDetectedAndTheOlderOneUsed() throws {
        let dir = try TempDir(label: "zstd")
        let size = 128 << 10
        let base = makeRawImage(size: size, seed: 27)
        let image = try packImage(base, in: dir)
        let overlayPath = dir.file("o")
        let one = [UInt8](repeating: 1, count: 4096), two = [UInt8](repeating: 2, count: 4096)
        var newest = 0
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            let q = try QueueDriver(factory, depth: 4)
            XCTAssertEqual(q.write(0, one), 4096)
            XCTAssertEqual(q.flush(), 0)  // generation 2, slot 1
            XCTAssertEqual(q.write(8192, two), 4096)
            XCTAssertEqual(q.flush(), 0)  // generation 3, slot 0
            XCTAssertEqual(factory.overlay!.generation, 3)
            newest = 0
            factory.simulateCrashOnClose()
        }
        // The newest slot torn as by a power loss in the middle of writing it:
        // another boot, whose map journal records do not count (their data
        // may not have reached the disk).
        try tearPage(overlayPath, capacity: UInt64(size), slot: newest)
        OverlayJournal.bootKeyOverride = 0xB007_0002
        defer { OverlayJournal.bootKeyOverride = nil }
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            let note = try XCTUnwrap(factory.recoveryNote)
            XCTAssertTrue(note.contains("slot 0 is damaged"), note)
            XCTAssertEqual(factory.overlay!.generation, 2)
            let q = try QueueDriver(factory, depth: 4)
            XCTAssertTrue(q.read(0, 4096).bytes == one)
            // Generation 3 is gone: sector 8192 reverts to the base.
            XCTAssertTrue(q.read(8192, 4096).bytes == Array(base[8192..<12288]))
            // The torn slot is rewritten by the next flush.
            XCTAssertEqual(q.write(8192, two), 4096)
            XCTAssertEqual(q.flush(), 0)
        }
        do {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
            XCTAssertNil(factory.recoveryNote)
            XCTAssertTrue(try QueueDriver(factory, depth: 4).read(8192, 4096).bytes == two)
        }
        // Both slots damaged: refused, never trusted.
        try tearPage(overlayPath, capacity: UInt64(size), slot: 0)
        try tearPage(overlayPath, capacity: UInt64(size), slot: 1)
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath)),
                         { if case .overlayCorrupt(let s) = $0 { return s.contains("both") }; return false })
    }

    func testDamagedSuperblockIsRefused() throws {
        let dir = try TempDir(label: "zstd")
        let image = try packImage(makeRawImage(size: 64 << 10, seed: 28), in: dir)
        let overlayPath = dir.file("o")
        _ = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath))
        let fd = open(overlayPath, O_WRONLY)
        var byte: UInt8 = 0x42
        XCTAssertEqual(pwrite(fd, &byte, 1, 20), 1)
        close(fd)
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath)),
                         { if case .checksumMismatch = $0 { return true }; return false })
        // Truncated below its map slots.
        XCTAssertEqual(truncate(overlayPath, 6000), 0)
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlayPath)),
                         { if case .checksumMismatch = $0 { return true }; if case .overlayCorrupt = $0 { return true }; return false })
    }

    func testMapRunsAcrossWords() {
        let map = OverlayMap(sectorCount: 70_000, pageCount: 3)
        map.set(from: 10, count: 200)
        XCTAssertEqual(map.run(from: 0, limit: 1000).allocated, false)
        XCTAssertEqual(map.run(from: 0, limit: 1000).length, 10)
        XCTAssertEqual(map.run(from: 10, limit: 1000).length, 200)
        XCTAssertEqual(map.run(from: 50, limit: 1000).length, 160)
        XCTAssertEqual(map.run(from: 210, limit: 1000).length, 1000)
        XCTAssertEqual(map.run(from: 210, limit: 5).length, 5)
        XCTAssertEqual(map.allocatedSectors(), 200)
        XCTAssertTrue(map.takeDirty(page: 0, slot: 0))
        XCTAssertFalse(map.takeDirty(page: 0, slot: 0))
        XCTAssertTrue(map.takeDirty(page: 0, slot: 1))
        XCTAssertFalse(map.takeDirty(page: 1, slot: 1))
        map.set(from: 40_000, count: 1)
        XCTAssertTrue(map.takeDirty(page: 1, slot: 0))
        XCTAssertFalse(map.hasBitsPastEnd())
    }
}
