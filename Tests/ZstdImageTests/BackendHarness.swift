import SystemSupport
import BlockBackends
import Glibc
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// Drives one queue handle synchronously: each call prepares one op, submits
/// and reaps its completion. Reads scatter into three iovecs to exercise
/// the cursor.
final class BackendHarness {
    let queue: any QueueBackend
    private let completions = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: 4)

    init(_ factory: any BlockBackendFactory, queueIndex: Int = 0) throws {
        queue = try factory.makeQueueBackend(queueIndex: queueIndex, depth: 4)
    }

    deinit { completions.deallocate() }

    private func complete(_ tag: UInt32) -> Int32 {
        queue.submit()
        XCTAssertEqual(queue.completionFD, -1)
        let n = queue.reap(into: completions)
        XCTAssertEqual(n, 1)
        XCTAssertEqual(completions[0].tag, tag)
        return completions[0].result
    }

    /// Reads `length` bytes at `offset`; nil with the negated errno on failure.
    func read(_ offset: UInt64, _ length: Int) -> (bytes: [UInt8], result: Int32) {
        var out = [UInt8](repeating: 0xAA, count: length)
        let result = out.withUnsafeMutableBytes { b -> Int32 in
            let base = b.baseAddress!
            let a = length / 3, c = length / 4
            var iov = [iovec(iov_base: base, iov_len: a), iovec(iov_base: base + a, iov_len: 0),
                       iovec(iov_base: base + a, iov_len: length - a - c), iovec(iov_base: base + length - c, iov_len: c)]
            return iov.withUnsafeMutableBufferPointer { v in
                queue.prepareRead(offset: offset, iovecs: v.baseAddress!, count: v.count, tag: 11)
                return complete(11)
            }
        }
        return (out, result)
    }

    func write(_ offset: UInt64, _ bytes: [UInt8]) -> Int32 {
        var copy = bytes
        return copy.withUnsafeMutableBytes { b -> Int32 in
            let half = b.count / 2
            var iov = [iovec(iov_base: b.baseAddress!, iov_len: half),
                       iovec(iov_base: b.baseAddress! + half, iov_len: b.count - half)]
            return iov.withUnsafeMutableBufferPointer { v in
                queue.prepareWrite(offset: offset, iovecs: v.baseAddress!, count: v.count, tag: 12)
                return complete(12)
            }
        }
    }

    func flush() -> Int32 {
        queue.prepareFlush(tag: 13)
        return complete(13)
    }

    func discard(_ offset: UInt64, _ length: UInt64) -> Int32 {
        queue.prepareDiscard(offset: offset, length: length, tag: 14)
        return complete(14)
    }

    func writeZeroes(_ offset: UInt64, _ length: UInt64) -> Int32 {
        queue.prepareWriteZeroes(offset: offset, length: length, unmap: false, tag: 15)
        return complete(15)
    }
}
