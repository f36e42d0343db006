import Glibc
import TestSupport
import XCTest
@testable import BlockBackends

final class MemoryBackendTests: XCTestCase {
    func testRoundTripThroughIovecsAndAcrossQueues() throws {
        let f = try MemoryBackendFactory(capacityBytes: 1 << 20)
        XCTAssertEqual(f.geometry, BackendGeometry(capacityBytes: 1 << 20, readOnly: false,
                                                   supportsDiscard: true, supportsWriteZeroes: true))
        XCTAssertEqual(f.summary, "memory:1048576 bytes")
        let a = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let b = try f.makeQueueBackend(queueIndex: 1, depth: 4)
        XCTAssertEqual(a.completionFD, -1)
        let data = pattern(5000, seed: 2)
        let out = AlignedBuffer(count: 5000)
        out.set(data)
        var iovs = [out.iovec(0, 1), out.iovec(1, 4000), out.iovec(4001, 999)]
        a.prepareWrite(offset: 512, iovecs: &iovs, count: 3, tag: 11)
        let buffer = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        XCTAssertEqual(a.reap(into: buffer), 0, "published by submit")
        XCTAssertEqual(a.inFlight, 1)
        XCTAssertEqual(submitAndWait(a, count: 1), [IOCompletion(tag: 11, result: 5000)])
        XCTAssertEqual(a.inFlight, 0)
        XCTAssertEqual(f.bytes(at: 512, count: 5000), data)

        let back = AlignedBuffer(count: 5000)
        var riovs = [back.iovec(0, 2500), back.iovec(2500, 2500)]
        b.prepareRead(offset: 512, iovecs: &riovs, count: 2, tag: 12)
        XCTAssertEqual(submitAndWait(b, count: 1), [IOCompletion(tag: 12, result: 5000)])
        XCTAssertEqual(back.bytes, data)
    }

    func testDiscardAndWriteZeroesZero() throws {
        let f = try MemoryBackendFactory(capacityBytes: 1 << 20)
        f.store(pattern(1 << 20, seed: 3), at: 0)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        q.prepareDiscard(offset: 1000, length: 20000, tag: 1)           // unaligned, spans pages
        q.prepareWriteZeroes(offset: 100_000, length: 512, unmap: false, tag: 2)
        q.prepareWriteZeroes(offset: 200_000, length: 300_000, unmap: true, tag: 3)
        let done = submitAndWait(q, count: 3)
        XCTAssertEqual(done, [IOCompletion(tag: 1, result: 0), IOCompletion(tag: 2, result: 0),
                              IOCompletion(tag: 3, result: 0)])
        let all = f.bytes(at: 0, count: 1 << 20)
        let original = pattern(1 << 20, seed: 3)
        for (start, length) in [(1000, 20000), (100_000, 512), (200_000, 300_000)] {
            XCTAssertTrue(all[start..<(start + length)].allSatisfy { $0 == 0 }, "range at \(start)")
            XCTAssertEqual(all[start - 1], original[start - 1])
            XCTAssertEqual(all[start + length], original[start + length])
        }
        XCTAssertEqual(Array(all[0..<1000]), Array(original[0..<1000]))
    }

    func testOutOfRangeIsIOErrorAndReadOnlyRefusesWrites() throws {
        let f = try MemoryBackendFactory(capacityBytes: 8192)
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 4)
        let buffer = AlignedBuffer(count: 4096)
        XCTAssertEqual(readOp(q, buffer, at: 4608), -EIO)
        XCTAssertEqual(writeOp(q, buffer, at: UInt64.max - 100), -EIO)
        XCTAssertEqual(runOne(q) { $0.prepareDiscard(offset: 8192, length: 512, tag: 1) }, -EIO)
        XCTAssertEqual(readOp(q, buffer, at: 4096), 4096)

        let ro = try MemoryBackendFactory(capacityBytes: 8192, readOnly: true)
        XCTAssertTrue(ro.geometry.readOnly)
        XCTAssertFalse(ro.geometry.supportsDiscard)
        let r = try ro.makeQueueBackend(queueIndex: 0, depth: 2)
        XCTAssertEqual(writeOp(r, buffer, at: 0), -EBADF)
        XCTAssertEqual(runOne(r) { $0.prepareWriteZeroes(offset: 0, length: 512, unmap: false, tag: 1) }, -EBADF)
        XCTAssertEqual(readOp(r, buffer, at: 0), 4096)
        XCTAssertEqual(runOne(r) { $0.prepareFlush(tag: 2) }, 0)
    }

    func testManyInFlightAndLargeSparseImage() throws {
        let f = try MemoryBackendFactory(capacityBytes: 16 << 30)  // pages appear on touch only
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 64)
        let buffer = AlignedBuffer(count: 512, fill: 7)
        var iov = buffer.iovec()
        for i in 0..<64 {
            q.prepareWrite(offset: UInt64(i) << 28, iovecs: &iov, count: 1, tag: UInt32(i))
        }
        let done = submitAndWait(q, count: 64)
        XCTAssertEqual(done.map(\.tag), (0..<64).map { UInt32($0) })
        XCTAssertTrue(done.allSatisfy { $0.result == 512 })
        XCTAssertEqual(f.bytes(at: 63 << 28, count: 512), [UInt8](repeating: 7, count: 512))
    }

    func testBadSizes() {
        for size: UInt64 in [0, 100, 513] {
            XCTAssertThrowsError(try MemoryBackendFactory(capacityBytes: size))
            XCTAssertThrowsError(try NullBackendFactory(capacityBytes: size))
        }
    }
}

final class NullBackendTests: XCTestCase {
    func testEverythingSucceedsAtOnce() throws {
        let f = try NullBackendFactory(capacityBytes: 1 << 30)
        XCTAssertEqual(f.geometry.capacityBytes, 1 << 30)
        XCTAssertEqual(f.summary, "null:1073741824 bytes")
        let q = try f.makeQueueBackend(queueIndex: 0, depth: 8)
        XCTAssertEqual(q.completionFD, -1)
        XCTAssertEqual(q.capacity, 8)
        let buffer = AlignedBuffer(count: 3000, fill: 0x5A)
        var iovs = [buffer.iovec(0, 1000), buffer.iovec(1000, 2000)]
        q.prepareRead(offset: 0, iovecs: &iovs, count: 2, tag: 1)
        q.prepareWrite(offset: 4096, iovecs: &iovs, count: 2, tag: 2)
        q.prepareFlush(tag: 3)
        q.prepareDiscard(offset: 0, length: 1 << 20, tag: 4)
        q.prepareWriteZeroes(offset: 0, length: 1 << 20, unmap: true, tag: 5)
        XCTAssertEqual(q.inFlight, 5)
        let done = submitAndWait(q, count: 5)
        XCTAssertEqual(done, [IOCompletion(tag: 1, result: 3000), IOCompletion(tag: 2, result: 3000),
                              IOCompletion(tag: 3, result: 0), IOCompletion(tag: 4, result: 0),
                              IOCompletion(tag: 5, result: 0)])
        XCTAssertEqual(buffer.bytes, [UInt8](repeating: 0x5A, count: 3000), "read leaves the buffer alone")
        XCTAssertEqual(q.inFlight, 0)
    }

    func testRingWrapsAroundOverManyBatches() throws {
        let q = try NullBackendFactory(capacityBytes: 4096).makeQueueBackend(queueIndex: 0, depth: 3)
        var tag: UInt32 = 0
        for _ in 0..<50 {
            q.prepareFlush(tag: tag)
            q.prepareFlush(tag: tag + 1)
            let done = submitAndWait(q, count: 2)
            XCTAssertEqual(done.map(\.tag), [tag, tag + 1])
            tag += 2
        }
    }

    func testReadOnlyNullRefusesWrites() throws {
        let q = try NullBackendFactory(capacityBytes: 4096, readOnly: true).makeQueueBackend(queueIndex: 0, depth: 2)
        XCTAssertEqual(writeOp(q, AlignedBuffer(count: 512), at: 0), -EBADF)
        XCTAssertEqual(readOp(q, AlignedBuffer(count: 512), at: 0), 512)
    }
}
