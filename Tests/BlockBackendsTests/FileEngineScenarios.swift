import Foundation
import Glibc
import XCTest
@testable import BlockBackends

/// Behaviour every file engine must show, run against a real temporary file
/// by `UringEngineTests`, `AioEngineTests` and `SyncEngineTests`.
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

    /// Bytes written through three iovecs read back identically through two
    /// differently split iovecs, and land in the file at the right offset.
    func writeThenReadBack() throws {
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

    func flushSucceeds() throws {
        let q = try factory().makeQueueBackend(queueIndex: 0, depth: 4)
        XCTAssertEqual(writeOp(q, AlignedBuffer(count: 4096, fill: 5), at: 0), 4096)
        q.prepareFlush(tag: 42)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 42, result: 0)])
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

    /// 64 writes then 64 reads in flight at once (plus a flush) complete once
    /// each with their own tags and data.
    func manyInFlight() throws {
        let depth = 65
        let f = try factory(size: 64 * 4096)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: depth)
        let buffers = (0..<64).map { i -> AlignedBuffer in
            let b = AlignedBuffer(count: 4096)
            b.set(pattern(4096, seed: UInt8(i)))
            return b
        }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: 64)
        defer { iovs.deallocate() }
        for i in 0..<64 {
            iovs[i] = buffers[i].iovec()
            q.prepareWrite(offset: UInt64((63 - i) * 4096), iovecs: iovs + i, count: 1, tag: UInt32(1000 + i))
        }
        q.prepareFlush(tag: 9999)
        XCTAssertEqual(q.inFlight, 65)
        let writes = submitAndWait(q, count: 65)
        XCTAssertEqual(Set(writes.map(\.tag)), Set((0..<64).map { UInt32(1000 + $0) } + [9999]))
        XCTAssertTrue(writes.allSatisfy { $0.result == ($0.tag == 9999 ? 0 : 4096) }, "\(writes)")
        XCTAssertEqual(q.inFlight, 0)

        let backs = (0..<64).map { _ in AlignedBuffer(count: 4096, fill: 0xAA) }
        for i in 0..<64 {
            iovs[i] = backs[i].iovec()
            q.prepareRead(offset: UInt64((63 - i) * 4096), iovecs: iovs + i, count: 1, tag: UInt32(i))
        }
        let reads = submitAndWait(q, count: 64)
        XCTAssertEqual(reads.map(\.tag).sorted(), (0..<64).map { UInt32($0) })
        XCTAssertTrue(reads.allSatisfy { $0.result == 4096 })
        for i in 0..<64 { XCTAssertEqual(backs[i].bytes, buffers[i].bytes, "block \(i)") }
    }

    /// Reaping one completion at a time still delivers all of them: the
    /// completion fd stays readable while some are left.
    func reapOneAtATime() throws {
        let q = try factory().makeQueueBackend(queueIndex: 0, depth: 8)
        let buffer = AlignedBuffer(count: 4096, fill: 1)
        var iov = buffer.iovec()
        for i in 0..<8 { q.prepareWrite(offset: UInt64(i * 4096), iovecs: &iov, count: 1, tag: UInt32(i)) }
        q.submit()
        // Give every op time to finish, so one drain of the eventfd covers them all.
        usleep(200_000)
        let done = waitFor(q, count: 8, reapBatch: 1, timeout: 5)
        XCTAssertEqual(done.map(\.tag).sorted(), Array(0..<8))
    }

    /// A read-only image is opened O_RDONLY: writes complete with -EBADF, reads work.
    func readOnlyRefusesWrites() throws {
        let path = dir.file("ro.img")
        writeFile(path, pattern(8192, seed: 4))
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

    /// Queues have their own fds and completion fds, and see each other's writes.
    func queuesAreIndependent() throws {
        let f = try factory()
        let a = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let b = try f.makeQueueBackend(queueIndex: 1, depth: 4)
        if a.completionFD >= 0 { XCTAssertNotEqual(a.completionFD, b.completionFD) }
        let data = AlignedBuffer(count: 4096)
        data.set(pattern(4096, seed: 77))
        XCTAssertEqual(writeOp(a, data, at: 4096), 4096)
        let back = AlignedBuffer(count: 4096)
        XCTAssertEqual(readOp(b, back, at: 4096), 4096)
        XCTAssertEqual(back.bytes, data.bytes)
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
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: .uring) }
    func testWriteThenReadBack() throws { try scenarios().writeThenReadBack() }
    func testFlush() throws { try scenarios().flushSucceeds() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testManyInFlight() throws { try scenarios().manyInFlight() }
    func testReapOneAtATime() throws { try scenarios().reapOneAtATime() }
    func testReadOnlyRefusesWrites() throws { try scenarios().readOnlyRefusesWrites() }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testQueuesAreIndependent() throws { try scenarios().queuesAreIndependent() }
    func testWriteZeroesFallsBackOnTmpfs() throws { try scenarios().writeZeroesFallsBackOnTmpfs() }
    func testSmallTransfersOnMemoryFilesCompleteInline() throws { try scenarios().uringInlineOnMemoryFiles() }
}

final class AioEngineTests: XCTestCase {
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: .aio) }
    func testWriteThenReadBack() throws { try scenarios().writeThenReadBack() }
    func testFlush() throws { try scenarios().flushSucceeds() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testManyInFlight() throws { try scenarios().manyInFlight() }
    func testReapOneAtATime() throws { try scenarios().reapOneAtATime() }
    func testReadOnlyRefusesWrites() throws { try scenarios().readOnlyRefusesWrites() }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testQueuesAreIndependent() throws { try scenarios().queuesAreIndependent() }
    func testWriteZeroesFallsBackOnTmpfs() throws { try scenarios().writeZeroesFallsBackOnTmpfs() }
}

final class SyncEngineTests: XCTestCase {
    func scenarios() throws -> FileEngineScenarios { try FileEngineScenarios(engine: .sync) }
    func testWriteThenReadBack() throws { try scenarios().writeThenReadBack() }
    func testFlush() throws { try scenarios().flushSucceeds() }
    func testDiscardPunchesHoles() throws { try scenarios().discardPunchesHoles() }
    func testWriteZeroesUnmap() throws { try scenarios().writeZeroes(unmap: true) }
    func testWriteZeroesNoUnmap() throws { try scenarios().writeZeroes(unmap: false) }
    func testManyInFlight() throws { try scenarios().manyInFlight() }
    func testReapOneAtATime() throws { try scenarios().reapOneAtATime() }
    func testReadOnlyRefusesWrites() throws { try scenarios().readOnlyRefusesWrites() }
    func testDirectRoundTrip() throws { try scenarios().directRoundTrip() }
    func testQueuesAreIndependent() throws { try scenarios().queuesAreIndependent() }
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
