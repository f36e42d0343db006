import SystemSupport
import BlockBackends
import Foundation
import Glibc
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// The decompression pool on its own and behind the zstd queue backend:
/// decodes land in the cache and wake the asking queue, one decode per chunk
/// however many ask, a corrupt frame reaches its waiter as a failure, and a
/// read missing the cache parks and then completes with the right bytes.
final class DecompressionPoolTests: XCTestCase {
    private var dir: TempDir!
    private var raw: [UInt8] = []
    private var imagePath = ""

    override func setUpWithError() throws {
        dir = try TempDir(label: "pool")
        raw = makeRawImage(size: 256 << 10, seed: 41)
        imagePath = try packImage(raw, in: dir)
    }

    /// Waits (bounded) until `waker` fires; false if it never did.
    private func waitForWake(_ waker: QueueWaker, seconds: Double = 10) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while !waker.take() {
            if monotonicSeconds() > deadline { return false }
            waker.wait(milliseconds: 50)
        }
        return true
    }

    private func cachedBytes(_ cache: ChunkCache, _ index: Int) -> [UInt8]? {
        var out: [UInt8]?
        _ = cache.withChunk(index) { p in out = Array(UnsafeRawBufferPointer(start: p, count: 4096)) }
        return out
    }

    /// A 2-thread pool over the test image with a 1 MiB cache, and a waker registered in `slot`.
    private func poolWithWaiter(slot: Int) throws -> (ChunkCache, DecompressionPool, QueueWaker) {
        let image = try SeekableImage.open(path: imagePath)
        let cache = try XCTUnwrap(ChunkCache(capacityBytes: 1 << 20, chunkSize: image.chunkSize))
        let pool = try DecompressionPool(image: image, cache: cache, threads: 2)
        let waker = try QueueWaker()
        pool.register(waker, slot: slot)
        return (cache, pool, waker)
    }

    func testPoolDecodesIntoTheCacheAndWakesTheWaiter() throws {
        let (cache, pool, waker) = try poolWithWaiter(slot: 3)
        XCTAssertEqual(pool.submit(5, waiter: 3), .queued)
        XCTAssertTrue(waitForWake(waker), "the pool never woke its waiter")
        XCTAssertEqual(cachedBytes(cache, 5), Array(raw[5 * 4096..<6 * 4096]))
        XCTAssertEqual(pool.submit(5, waiter: 3), .ready, "a cached chunk is not decoded again")
        XCTAssertEqual(pool.statistics().decoded, 1)
    }

    func testConcurrentRequestsOfOneChunkDecodeOnce() throws {
        let image = try SeekableImage.open(path: imagePath)
        let cache = try XCTUnwrap(ChunkCache(capacityBytes: 1 << 20, chunkSize: image.chunkSize))
        let pool = try DecompressionPool(image: image, cache: cache, threads: 4)
        let wakers = try (0..<8).map { _ in try QueueWaker() }
        for (slot, w) in wakers.enumerated() { pool.register(w, slot: slot) }
        pool.pause()  // every request of a chunk arrives while its decode is pending
        let shared = pool
        runConcurrently(8) { slot in
            for chunk in 0..<32 { XCTAssertEqual(shared.submit(chunk, waiter: slot), .queued) }
        }
        pool.resume()
        for w in wakers { XCTAssertTrue(waitForWake(w)) }
        let deadline = monotonicSeconds() + 10
        while (0..<32).contains(where: { pool.isPending($0) }) && monotonicSeconds() < deadline { usleep(1000) }
        XCTAssertEqual(pool.statistics().decoded, 32, "32 chunks asked for by 8 queues: one decode each")
        for chunk in 0..<32 { XCTAssertEqual(cachedBytes(cache, chunk), Array(raw[chunk * 4096..<(chunk + 1) * 4096])) }
    }

    /// Overwrites the middle of chunk `index`'s frame with garbage.
    private func corruptFrame(_ index: Int) throws {
        let image = try SeekableImage.open(path: imagePath)
        let offset = image.table.offsets[index] + UInt64(image.table.frameSize(index) / 2)
        let fd = open(imagePath, O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var junk: [UInt8] = [0xDE, 0xAD, 0xBE, 0xEF]
        XCTAssertEqual(pwrite(fd, &junk, junk.count, off_t(offset)), junk.count)
        close(fd)
    }

    func testCorruptFrameIsReportedToItsWaiter() throws {
        try corruptFrame(9)
        let (cache, pool, waker) = try poolWithWaiter(slot: 0)
        XCTAssertEqual(pool.submit(9, waiter: 0), .queued)
        XCTAssertTrue(waitForWake(waker), "a failed decode must still wake its waiter")
        XCTAssertEqual(pool.submit(9, waiter: 0), .failed)
        XCTAssertFalse(cache.contains(9))
        XCTAssertEqual(pool.statistics().failed, 1)
        // Told once: asking again decodes again (and fails again).
        XCTAssertEqual(pool.submit(9, waiter: 0), .queued)
        XCTAssertTrue(waitForWake(waker))
        XCTAssertEqual(pool.submit(9, waiter: 0), .failed)
    }

    func testCorruptFrameFailsTheParkedReadWithEIO() throws {
        try corruptFrame(9)
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: imagePath, cacheBytes: 1 << 20))
        XCTAssertNotNil(factory.pool)
        let queue = try QueueDriver(factory, depth: 4)
        XCTAssertEqual(queue.read(9 * 4096 + 512, 1024).result, -EIO)
        let (result, bytes) = queue.read(10 * 4096, 4096)
        XCTAssertEqual(result, 4096, "the chunk after the bad one reads fine")
        XCTAssertEqual(bytes, Array(raw[10 * 4096..<11 * 4096]))
    }

    func testQueueBackendParksOnAMissAndCompletesWithTheBytes() throws {
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: imagePath, cacheBytes: 1 << 20,
                                                                         readahead: false))
        let pool = try XCTUnwrap(factory.pool)
        let backend = try factory.makeQueueBackend(queueIndex: 0, depth: 8)
        XCTAssertGreaterThanOrEqual(backend.completionFD, 0)
        pool.pause()
        // A read spanning chunks 2-4 and a read of chunk 20: both miss and park.
        let a = AlignedBuffer(count: 3 * 4096), b = AlignedBuffer(count: 4096)
        var iovs = [a.iovec(), b.iovec()]
        iovs.withUnsafeMutableBufferPointer { v in
            backend.prepareRead(offset: 2 * 4096, iovecs: v.baseAddress!, count: 1, tag: 1)
            backend.prepareRead(offset: 20 * 4096, iovecs: v.baseAddress! + 1, count: 1, tag: 2)
        }
        backend.submit()
        let none = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: 4)
        defer { none.deallocate() }
        XCTAssertEqual(backend.reap(into: none), 0, "nothing completes while the pool holds the decodes")
        XCTAssertEqual(backend.inFlight, 2)
        XCTAssertTrue(pool.isPending(2) && pool.isPending(3) && pool.isPending(4) && pool.isPending(20),
                      "every chunk of a parked read is asked for at once")
        pool.resume()
        let done = waitFor(backend, count: 2)
        XCTAssertEqual(Set(done.map(\.tag)), [1, 2])
        XCTAssertTrue(done.allSatisfy { $0.result > 0 })
        XCTAssertEqual(a.bytes, Array(raw[2 * 4096..<5 * 4096]))
        XCTAssertEqual(b.bytes, Array(raw[20 * 4096..<21 * 4096]))
        XCTAssertEqual(pool.statistics().decoded, 4)
    }

    func testDefaultCacheHoldsASmallImageWhole() throws {
        XCTAssertEqual(ZstdBackendOptions.defaultCacheBytes(logicalSize: 10 << 20), 10 << 20)
        XCTAssertGreaterThanOrEqual(ZstdBackendOptions.defaultCacheBytes(logicalSize: 1 << 50), 64 << 20)
        XCTAssertLessThan(ZstdBackendOptions.defaultCacheBytes(logicalSize: 1 << 50), 1 << 50)
    }
}
