import Foundation
import Glibc
import TestSupport
import XCTest
@testable import BlockBackends

/// The file engines under the backend conformance suite, on a real temporary
/// file of `BackendConformance.capacity` bytes (buffered I/O).

func fileConformance(_ engine: FileEngine) -> BackendConformance {
    BackendConformance(open: {
        let dir = try TempDir(label: "conformance")
        let f = try FileBackendFactory(path: dir.file("disk.img"), size: BackendConformance.capacity, engine: engine)
        return OpenedBackend(f, keepAlive: [dir])
    }, openReadOnly: {
        let dir = try TempDir(label: "conformance")
        try writeFile(dir.file("ro.img"), pattern(Int(BackendConformance.capacity), seed: 4))
        let f = try FileBackendFactory(path: dir.file("ro.img"), readOnly: true, engine: engine)
        return OpenedBackend(f, keepAlive: [dir])
    })
}

/// What only file engines show (on top of the conformance suite): data in
/// the file itself, hole punching seen in st_blocks, O_DIRECT, the tmpfs
/// fallbacks and io_uring's inline path on memory files. Run by
/// `UringEngineTests`, `AioEngineTests` and `SyncEngineTests`.
struct FileEngineScenarios {
    let engine: FileEngine
    let dir: TempDir

    init(engine: FileEngine) throws {
        self.engine = engine
        dir = try TempDir()
    }

    func factory(_ name: String = "disk.img", size: UInt64? = 1 << 20, readOnly: Bool = false,
                 direct: Bool = false) throws -> FileBackendFactory {
        try FileBackendFactory(path: dir.file(name), size: size, readOnly: readOnly, direct: direct,
                               engine: engine)
    }

    /// Bytes written through three iovecs land in the file at the right
    /// offset, and read back identically through two differently split iovecs.
    func writesLandInTheFile() throws {
        let f = try factory()
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 8)
        let data = pattern(4096 + 512 + 8192, seed: 3)
        let out = AlignedBuffer(count: data.count)
        out.set(data)
        var iovs = [out.iovec(0, 4096), out.iovec(4096, 512), out.iovec(4608, 8192)]
        q.prepareWrite(offset: 65536, iovecs: &iovs, count: 3, tag: 7)
        XCTAssertEqual(q.inFlight, 1)
        let written = submitAndWait(q, count: 1)
        XCTAssertEqual(written, [IOCompletion(tag: 7, result: Int32(data.count))])
        XCTAssertEqual(q.inFlight, 0)
        XCTAssertEqual(fileBytes(f.path, offset: 65536, count: data.count), data)

        let back = AlignedBuffer(count: data.count, fill: 0xAA)
        var riovs = [back.iovec(0, 1000), back.iovec(1000, data.count - 1000)]
        q.prepareRead(offset: 65536, iovecs: &riovs, count: 2, tag: 8)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 8, result: Int32(data.count))])
        XCTAssertEqual(back.bytes, data)
    }

    /// Discard punches a hole: fewer blocks allocated, the range reads as zeroes,
    /// its neighbours are untouched.
    func discardPunchesHoles() throws {
        let f = try factory()
        XCTAssertTrue(f.geometry.supportsDiscard)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let data = pattern(1 << 20, seed: 9)
        let buffer = AlignedBuffer(count: data.count)
        buffer.set(data)
        XCTAssertEqual(writeOp(q, buffer, at: 0), Int32(data.count))
        q.prepareFlush(tag: 1)
        XCTAssertEqual(submitAndWait(q, count: 1).first?.result, 0)
        let before = statFile(f.path).blocks

        q.prepareDiscard(offset: 256 << 10, length: 512 << 10, tag: 77)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 77, result: 0)])
        let after = statFile(f.path).blocks
        XCTAssertLessThanOrEqual(after, before - Int64((512 << 10) / 512) + 16,
                                 "st_blocks \(before) -> \(after)")
        XCTAssertEqual(statFile(f.path).size, 1 << 20, "discard keeps the size")

        let back = AlignedBuffer(count: data.count, fill: 0xAA)
        XCTAssertEqual(readOp(q, back, at: 0), Int32(data.count))
        let got = back.bytes
        XCTAssertEqual(Array(got[0..<(256 << 10)]), Array(data[0..<(256 << 10)]))
        XCTAssertTrue(got[(256 << 10)..<(768 << 10)].allSatisfy { $0 == 0 })
        XCTAssertEqual(Array(got[(768 << 10)...]), Array(data[(768 << 10)...]))
    }

    /// Write-zeroes, with and without unmap, reads back zeroes and keeps neighbours.
    func writeZeroes(unmap: Bool, name: String = "disk.img", dir: TempDir? = nil) throws {
        let f: FileBackendFactory
        if let dir {
            f = try FileBackendFactory(path: dir.file(name), size: 1 << 20, engine: engine)
        } else {
            f = try factory(name)
        }
        XCTAssertTrue(f.geometry.supportsWriteZeroes)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let data = pattern(256 << 10, seed: 1)
        let buffer = AlignedBuffer(count: data.count)
        buffer.set(data)
        XCTAssertEqual(writeOp(q, buffer, at: 0), Int32(data.count))
        q.prepareFlush(tag: 1)
        _ = submitAndWait(q, count: 1)
        let before = statFile(f.path).blocks

        q.prepareWriteZeroes(offset: 64 << 10, length: 128 << 10, unmap: unmap, tag: 5)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 5, result: 0)])
        let back = AlignedBuffer(count: data.count, fill: 0xAA)
        XCTAssertEqual(readOp(q, back, at: 0), Int32(data.count))
        let got = back.bytes
        XCTAssertEqual(Array(got[0..<(64 << 10)]), Array(data[0..<(64 << 10)]))
        XCTAssertTrue(got[(64 << 10)..<(192 << 10)].allSatisfy { $0 == 0 })
        XCTAssertEqual(Array(got[(192 << 10)...]), Array(data[(192 << 10)...]))
        XCTAssertEqual(fileBytes(f.path, offset: 64 << 10, count: 128 << 10),
                       [UInt8](repeating: 0, count: 128 << 10))
        if unmap || dir != nil {
            // Unmap punches a hole; on tmpfs (no ZERO_RANGE) the fallback punches too.
            XCTAssertLessThan(statFile(f.path).blocks, before, "range deallocated")
        }
    }

    /// A read-only image is opened O_RDONLY: sized by the file, writes complete
    /// with -EBADF, reads work, the file is untouched.
    func readOnlyOpensTheFileReadOnly() throws {
        let path = dir.file("ro.img")
        try writeFile(path, pattern(8192, seed: 4))
        let f = try FileBackendFactory(path: path, readOnly: true, engine: engine)
        XCTAssertTrue(f.geometry.readOnly)
        XCTAssertFalse(f.geometry.supportsDiscard)
        XCTAssertFalse(f.geometry.supportsWriteZeroes)
        XCTAssertEqual(f.geometry.capacityBytes, 8192)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 2)
        XCTAssertEqual(writeOp(q, AlignedBuffer(count: 512, fill: 9), at: 0), -EBADF)
        let back = AlignedBuffer(count: 8192)
        XCTAssertEqual(readOp(q, back, at: 0), 8192)
        XCTAssertEqual(back.bytes, pattern(8192, seed: 4))
        XCTAssertEqual(fileBytes(path, offset: 0, count: 8192), pattern(8192, seed: 4))
    }

    /// O_DIRECT with aligned buffers round-trips.
    func directRoundTrip() throws {
        let f = try factory(direct: true)
        XCTAssertTrue(f.direct)
        XCTAssertGreaterThanOrEqual(f.geometry.requiredAlignment, 512)
        XCTAssertEqual(f.geometry.requiredAlignment & (f.geometry.requiredAlignment - 1), 0)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let data = pattern(16384, seed: 12)
        let out = AlignedBuffer(count: data.count)
        out.set(data)
        XCTAssertEqual(writeOp(q, out, at: 8192), 16384)
        q.prepareFlush(tag: 3)
        XCTAssertEqual(submitAndWait(q, count: 1).first?.result, 0)
        let back = AlignedBuffer(count: data.count)
        XCTAssertEqual(readOp(q, back, at: 8192), 16384)
        XCTAssertEqual(back.bytes, data)
    }

    /// On tmpfs (no ZERO_RANGE) write-zeroes falls back and still zeroes.
    func writeZeroesFallsBackOnTmpfs() throws {
        guard statFile("/dev/shm").size >= 0, access("/dev/shm", W_OK) == 0 else {
            throw XCTSkip("no writable /dev/shm")
        }
        let shm = try TempDir(parent: "/dev/shm")
        try writeZeroes(unmap: false, name: "a.img", dir: shm)
        try writeZeroes(unmap: true, name: "b.img", dir: shm)
    }

    /// io_uring on a file in memory: small transfers complete at prepare time
    /// (no io-wq worker), larger ones through the ring; both read back right;
    /// a file on disk takes the ring for everything.
    func uringInlineOnMemoryFiles() throws {
        guard access("/dev/shm", W_OK) == 0 else { throw XCTSkip("no writable /dev/shm") }
        let shm = try TempDir(parent: "/dev/shm")
        let f = try FileBackendFactory(path: shm.file("m.img"), size: 4 << 20, engine: .uring)
        let q = try XCTUnwrap(try f.makeQueueBackend(queueIndex: 0, depth: 8) as? UringQueueBackend)
        XCTAssertEqual(q.inlineLimit, UringQueueBackend.memoryFileInlineLimit)
        let buffer = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: 8)
        defer { buffer.deallocate() }

        let small = pattern(64 << 10, seed: 21)
        let out = AlignedBuffer(count: small.count)
        out.set(small)
        var iovs = [out.iovec(0, 4096), out.iovec(4096, small.count - 4096)]
        q.prepareWrite(offset: 8192, iovecs: &iovs, count: 2, tag: 1)
        q.submit()
        XCTAssertEqual(q.reap(into: buffer), 1, "done at prepare time: reaped with no wait")
        XCTAssertEqual(buffer[0], IOCompletion(tag: 1, result: Int32(small.count)))
        XCTAssertEqual(fileBytes(f.path, offset: 8192, count: small.count), small)
        let back = AlignedBuffer(count: small.count, fill: 0)
        var riovs = [back.iovec(0, small.count)]
        q.prepareRead(offset: 8192, iovecs: &riovs, count: 1, tag: 2)
        q.submit()
        XCTAssertEqual(q.reap(into: buffer), 1)
        XCTAssertEqual(buffer[0], IOCompletion(tag: 2, result: Int32(small.count)))
        XCTAssertEqual(back.bytes, small)
        XCTAssertEqual(q.inFlight, 0)

        let big = pattern(1 << 20, seed: 22)
        let bigOut = AlignedBuffer(count: big.count)
        bigOut.set(big)
        var biovs = [bigOut.iovec(0, big.count)]
        q.prepareWrite(offset: 1 << 20, iovecs: &biovs, count: 1, tag: 3)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 3, result: Int32(big.count))])
        XCTAssertEqual(fileBytes(f.path, offset: 1 << 20, count: big.count), big)

        let dirFD = open(dir.path, O_RDONLY | O_DIRECTORY)
        defer { close(dirFD) }
        if !FileImage.isMemoryBacked(fd: dirFD) {     // the test's own temp dir is on a disk
            let onDisk = try XCTUnwrap(try factory().makeQueueBackend(queueIndex: 0, depth: 8) as? UringQueueBackend)
            XCTAssertEqual(onDisk.inlineLimit, 0)
        }
    }
}

final class UringEngineTests: XCTestCase {
    let engine = FileEngine.uring
    func conformance() -> BackendConformance { fileConformance(engine) }
    func testWriteThenReadBack() throws { try conformance().writeThenReadBack() }
    func testFlush() throws { try conformance().flushSucceeds() }
    func testDiscardReadsZeroes() throws { try conformance().discardReadsZeroes() }
    func testWriteZeroesReadZeroes() throws { try conformance().writeZeroesReadZeroes() }
    func testManyInFlight() throws { try conformance().manyInFlight() }
    func testReapOneAtATime() throws { try conformance().reapOneAtATime() }
    func testOutOfRangeReads() throws { try conformance().outOfRangeReadsFail() }
    func testOutOfRangeWrites() throws { try conformance().outOfRangeWritesFail() }
    func testMisalignedRequests() throws { try conformance().misalignedRequests() }
    func testReadOnlyRefusesWrites() throws { try conformance().readOnlyRefusesWrites() }
    func testQueuesAreIndependent() throws { try conformance().queuesSeeEachOthersWrites() }
    // File-only extras.
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: engine) }
    func testWritesLandInTheFile() throws { try scenarios().writesLandInTheFile() }
    func testReadOnlyOpensTheFileReadOnly() throws { try scenarios().readOnlyOpensTheFileReadOnly() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testWriteZeroesFallsBackOnTmpfs() throws { try scenarios().writeZeroesFallsBackOnTmpfs() }
    func testSmallTransfersOnMemoryFilesCompleteInline() throws { try scenarios().uringInlineOnMemoryFiles() }
}

final class AioEngineTests: XCTestCase {
    let engine = FileEngine.aio
    func conformance() -> BackendConformance { fileConformance(engine) }
    func testWriteThenReadBack() throws { try conformance().writeThenReadBack() }
    func testFlush() throws { try conformance().flushSucceeds() }
    func testDiscardReadsZeroes() throws { try conformance().discardReadsZeroes() }
    func testWriteZeroesReadZeroes() throws { try conformance().writeZeroesReadZeroes() }
    func testManyInFlight() throws { try conformance().manyInFlight() }
    func testReapOneAtATime() throws { try conformance().reapOneAtATime() }
    func testOutOfRangeReads() throws { try conformance().outOfRangeReadsFail() }
    func testOutOfRangeWrites() throws { try conformance().outOfRangeWritesFail() }
    func testMisalignedRequests() throws { try conformance().misalignedRequests() }
    func testReadOnlyRefusesWrites() throws { try conformance().readOnlyRefusesWrites() }
    func testQueuesAreIndependent() throws { try conformance().queuesSeeEachOthersWrites() }
    // File-only extras.
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: engine) }
    func testWritesLandInTheFile() throws { try scenarios().writesLandInTheFile() }
    func testReadOnlyOpensTheFileReadOnly() throws { try scenarios().readOnlyOpensTheFileReadOnly() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testWriteZeroesFallsBackOnTmpfs() throws { try scenarios().writeZeroesFallsBackOnTmpfs() }
}

final class SyncEngineTests: XCTestCase {
    let engine = FileEngine.sync
    func conformance() -> BackendConformance { fileConformance(engine) }
    func testWriteThenReadBack() throws { try conformance().writeThenReadBack() }
    func testFlush() throws { try conformance().flushSucceeds() }
    func testDiscardReadsZeroes() throws { try conformance().discardReadsZeroes() }
    func testWriteZeroesReadZeroes() throws { try conformance().writeZeroesReadZeroes() }
    func testManyInFlight() throws { try conformance().manyInFlight() }
    func testReapOneAtATime() throws { try conformance().reapOneAtATime() }
    func testOutOfRangeReads() throws { try conformance().outOfRangeReadsFail() }
    func testOutOfRangeWrites() throws { try conformance().outOfRangeWritesFail() }
    func testMisalignedRequests() throws { try conformance().misalignedRequests() }
    func testReadOnlyRefusesWrites() throws { try conformance().readOnlyRefusesWrites() }
    func testQueuesAreIndependent() throws { try conformance().queuesSeeEachOthersWrites() }
    // File-only extras.
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: engine) }
    func testWritesLandInTheFile() throws { try scenarios().writesLandInTheFile() }
    func testReadOnlyOpensTheFileReadOnly() throws { try scenarios().readOnlyOpensTheFileReadOnly() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testWriteZeroesFallsBackOnTmpfs() throws { try scenarios().writeZeroesFallsBackOnTmpfs() }

    func testCompletionsReadyRightAfterSubmit() throws {
        let scenarios = try FileEngineScenarios(engine: .sync)  // owns the temp dir
        let q = try scenarios.factory().makeQueueBackend(queueIndex: 0, depth: 2)
        XCTAssertEqual(q.completionFD, -1)
        q.prepareFlush(tag: 1)
        let buffer = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        XCTAssertEqual(q.reap(into: buffer), 0, "nothing before submit")
        XCTAssertEqual(q.inFlight, 1)
        q.submit()
        XCTAssertEqual(q.reap(into: buffer), 1)
        XCTAssertEqual(buffer[0], IOCompletion(tag: 1, result: 0))
        XCTAssertEqual(q.inFlight, 0)
    }
}
