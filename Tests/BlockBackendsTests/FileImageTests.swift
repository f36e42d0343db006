import Foundation
import Glibc
import TestSupport
import XCTest
@testable import BlockBackends

/// Opening images: creation, growth, refusals, geometry.
final class FileImageTests: XCTestCase {
    func testCreatesSparseFileOfRequestedSize() throws {
        let dir = try TempDir()
        let path = dir.file("new.img")
        let f = try FileBackendFactory(path: path, size: 64 << 20, engine: .sync)
        XCTAssertEqual(f.geometry.capacityBytes, 64 << 20)
        XCTAssertFalse(f.geometry.readOnly)
        XCTAssertTrue(f.geometry.supportsDiscard)
        XCTAssertTrue(f.geometry.supportsWriteZeroes)
        XCTAssertEqual(f.geometry.requiredAlignment, 512)
        XCTAssertFalse(f.isBlockDevice)
        let st = statFile(path)
        XCTAssertEqual(st.size, 64 << 20)
        XCTAssertLessThan(st.blocks, 64, "sparse: nothing allocated")
    }

    func testUsesExistingSizeWhenNoneGiven() throws {
        let dir = try TempDir()
        let path = dir.file("old.img")
        try writeFile(path, pattern(3 * 512, seed: 1))
        XCTAssertEqual(try FileBackendFactory(path: path, engine: .sync).geometry.capacityBytes, 1536)
        // Same size given explicitly: fine, untouched.
        XCTAssertEqual(try FileBackendFactory(path: path, size: 1536, engine: .sync).geometry.capacityBytes, 1536)
        XCTAssertEqual(fileBytes(path, offset: 0, count: 1536), pattern(1536, seed: 1))
    }

    func testGrowsSmallerFileKeepingData() throws {
        let dir = try TempDir()
        let path = dir.file("grow.img")
        try writeFile(path, pattern(4096, seed: 2))
        let f = try FileBackendFactory(path: path, size: 1 << 20, engine: .sync)
        XCTAssertEqual(f.geometry.capacityBytes, 1 << 20)
        XCTAssertEqual(statFile(path).size, 1 << 20)
        XCTAssertEqual(fileBytes(path, offset: 0, count: 4096), pattern(4096, seed: 2))
        XCTAssertEqual(fileBytes(path, offset: 4096, count: 4096), [UInt8](repeating: 0, count: 4096))
    }

    func testRefusesToShrink() throws {
        let dir = try TempDir()
        let path = dir.file("big.img")
        try writeFile(path, pattern(8192, seed: 3))
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 4096, engine: .sync)) { error in
            XCTAssertEqual(error as? BackendError, .wouldShrink(path: path, current: 8192, requested: 4096))
        }
        XCTAssertEqual(statFile(path).size, 8192, "left alone")
    }

    func testBadSizes() throws {
        let dir = try TempDir()
        for size: UInt64 in [0, 1, 511, 1000, 4097] {
            XCTAssertThrowsError(try FileBackendFactory(path: dir.file("x.img"), size: size, engine: .sync)) {
                XCTAssertEqual(($0 as? BackendError)?.kind, .badSize, "\($0)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.file("x.img")), "nothing created")
        // Existing file whose size is not a multiple of 512, or empty.
        let odd = dir.file("odd.img")
        try writeFile(odd, [UInt8](repeating: 1, count: 1000))
        XCTAssertThrowsError(try FileBackendFactory(path: odd, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .badSize, "\($0)")
        }
        let empty = dir.file("empty.img")
        try writeFile(empty, [])
        XCTAssertThrowsError(try FileBackendFactory(path: empty, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .badSize, "\($0)")
        }
    }

    func testMissingFileWithoutSize() throws {
        let dir = try TempDir()
        let path = dir.file("absent.img")
        XCTAssertThrowsError(try FileBackendFactory(path: path, engine: .sync)) { error in
            guard let failure = error as? BackendError, failure.kind == .invalidSpec else { return XCTFail("\(error)") }
            let message = failure.description
            XCTAssertTrue(message.contains(path) && message.contains("does not exist"), message)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    func testReadOnlyCannotCreateOrGrow() throws {
        let dir = try TempDir()
        let path = dir.file("ro.img")
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 4096, readOnly: true, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .invalidSpec, "\($0)")
        }
        try writeFile(path, pattern(4096, seed: 5))
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 8192, readOnly: true, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .invalidSpec, "\($0)")
        }
        XCTAssertEqual(statFile(path).size, 4096)
    }

    func testDirectoryIsRefused() throws {
        let dir = try TempDir()
        XCTAssertThrowsError(try FileBackendFactory(path: dir.path, engine: .sync)) {
            XCTAssertEqual($0 as? BackendError, .cannotOpen(path: dir.path, errno: EISDIR))
        }
        XCTAssertThrowsError(try FileBackendFactory(path: dir.path, readOnly: true, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .invalidSpec, "\($0)")
        }
    }

    func testReplacedImageIsRefusedByNewQueues() throws {
        let dir = try TempDir()
        let path = dir.file("swap.img")
        let f = try FileBackendFactory(path: path, size: 4096, engine: .sync)
        // The running queue keeps the old inode alive, so the new file cannot reuse its number.
        let running = try f.makeQueueBackend(queueIndex: 0, depth: 1)
        unlink(path)
        try writeFile(path, [UInt8](repeating: 0, count: 4096))
        XCTAssertThrowsError(try f.makeQueueBackend(queueIndex: 1, depth: 1)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .invalidSpec, "\($0)")
        }
        withExtendedLifetime(running) {}
    }

    func testSummaryAndDepthChecks() throws {
        let dir = try TempDir()
        let f = try FileBackendFactory(path: dir.file("s.img"), size: 4096, engine: .aio)
        XCTAssertEqual(f.summary, "file:\(dir.file("s.img")) (aio)")
        XCTAssertThrowsError(try f.makeQueueBackend(queueIndex: 0, depth: 0))
        XCTAssertEqual(FileEngine(rawValue: "uring"), .uring)
        XCTAssertEqual(FileEngine.allCases, [.uring, .aio, .sync])
    }

    func testDirectOnTmpfsFailsAtOpen() throws {
        guard access("/dev/shm", W_OK) == 0 else { throw XCTSkip("no writable /dev/shm") }
        let shm = try TempDir(parent: "/dev/shm")
        do {
            let f = try FileBackendFactory(path: shm.file("d.img"), size: 4096, direct: true, engine: .sync)
            // Some kernels let tmpfs accept O_DIRECT; then it must simply work.
            let q = try f.makeQueueBackend(queueIndex: 0, depth: 1)
            XCTAssertEqual(writeOp(q, AlignedBuffer(count: 4096, fill: 1), at: 0), 4096)
        } catch {
            XCTAssertEqual(error, .cannotOpen(path: shm.file("d.img"), errno: EINVAL))
        }
    }

    // MARK: the synchronous helpers' rare paths

    func testTransferContinuesAfterPartialProgress() throws {
        let dir = try TempDir()
        let path = dir.file("p.img")
        let data = pattern(10000, seed: 8)
        try writeFile(path, data + [UInt8](repeating: 0, count: 240))
        let fd = open(path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let ops = SyncFileOps(fd: fd, alignment: 512, capacity: CapacityCell(.max))
        let back = AlignedBuffer(count: 10000, fill: 0xAA)
        var iovs = [back.iovec(0, 3000), back.iovec(3000, 0), back.iovec(3000, 7000)]
        // Pretend an async engine already moved 4500 bytes (into the middle of the third iovec).
        XCTAssertEqual(ops.transfer(write: false, offset: 0, iovecs: &iovs, count: 3, total: 10000, done: 4500), 10000)
        let got = back.bytes
        XCTAssertTrue(got[0..<4500].allSatisfy { $0 == 0xAA }, "done part left alone")
        XCTAssertEqual(Array(got[4500...]), Array(data[4500...]))
        // Reading past the end of the file is an I/O error, not a short success.
        XCTAssertEqual(ops.transfer(write: false, offset: 8192, iovecs: &iovs, count: 3, total: 10000, done: 0), -EIO)
    }

    func testWriteZeroesByWritingWhenNoFallocateModeWorks() throws {
        let dir = try TempDir()
        let path = dir.file("z.img")
        try writeFile(path, pattern(3 << 20, seed: 6))
        let fd = open(path, O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let ops = SyncFileOps(fd: fd, alignment: 512, capacity: CapacityCell(.max))
        ops.noteUnsupported(mode: SyncFileOps.punchHoleMode)
        ops.noteUnsupported(mode: SyncFileOps.zeroRangeMode)
        XCTAssertNil(ops.zeroingMode(unmap: true))
        XCTAssertEqual(ops.discard(offset: 0, length: 4096), -EOPNOTSUPP)
        // More than the 1 MiB zero buffer, unaligned ends.
        XCTAssertEqual(ops.writeZeroes(offset: 100, length: (2 << 20) + 300, unmap: true), 0)
        XCTAssertEqual(fileBytes(path, offset: 0, count: 100), Array(pattern(100, seed: 6)))
        XCTAssertEqual(fileBytes(path, offset: 100, count: (2 << 20) + 300),
                       [UInt8](repeating: 0, count: (2 << 20) + 300))
        let tail = (2 << 20) + 400
        XCTAssertEqual(fileBytes(path, offset: tail, count: 1000), Array(pattern(3 << 20, seed: 6)[tail..<(tail + 1000)]))
    }
}
