import SystemSupport
import BlockBackends
import Glibc
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

final class ReadOnlyBackendTests: XCTestCase {
    func testReadOnlyWithoutOverlayServesTheRawImage() throws {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: 512 << 10, seed: 11)
        let image = try packImage(raw, in: dir)
        for cacheBytes: UInt64 in [0, 64 << 10, 16 << 20] {
            let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, cacheBytes: cacheBytes))
            XCTAssertTrue(factory.geometry.readOnly)
            XCTAssertFalse(factory.geometry.supportsDiscard)
            XCTAssertFalse(factory.geometry.supportsWriteZeroes)
            XCTAssertEqual(factory.geometry.capacityBytes, UInt64(raw.count))
            let queue = try QueueDriver(factory, depth: 4)
            // Without a cache (or with one too small for the pool) chunks decode inline: completions are ready at submit.
            XCTAssertEqual(queue.queue.completionFD == -1, factory.pool == nil)
            var rng = TestRandom(seed: cacheBytes + 1)
            for _ in 0..<200 {
                let offset = rng.below(raw.count)
                let length = min(raw.count - offset, 1 + rng.below(20_000))
                let (result, bytes) = queue.read(UInt64(offset), length)
                XCTAssertEqual(result, Int32(length))
                XCTAssertTrue(sameBytes(bytes, 0, raw, offset, length), "offset \(offset) length \(length)")
            }
            XCTAssertEqual(queue.read(UInt64(raw.count - 512), 1024).result, -EIO)
            XCTAssertEqual(queue.write(0, [UInt8](repeating: 1, count: 512)), -EBADF)
            XCTAssertEqual(queue.discard(0, 4096), -EBADF)
            XCTAssertEqual(queue.writeZeroes(0, 4096), -EBADF)
            XCTAssertEqual(queue.flush(), 0)
        }
    }

    func testRefusesImagesThatAreNotWholeSectors() throws {
        let dir = try TempDir(label: "zstd")
        let image = try packImage(makeRawImage(size: 10_000, seed: 12), in: dir)
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image)),
                         { if case .unsupported = $0 { return true }; return false })
    }

    func testQueuesShareTheCacheConcurrently() throws {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: 1 << 20, seed: 13)
        let image = try packImage(raw, in: dir)
        // A cache smaller than the image: hits, misses and evictions race.
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, cacheBytes: 128 << 10))
        let failures = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        failures.initialize(repeating: 0, count: 4)
        defer { failures.deallocate() }
        let queues = try (0..<4).map { try factory.makeQueueBackend(queueIndex: $0, depth: 8) }
        nonisolated(unsafe) let shared = (queues, failures, raw)
        runConcurrently(4) { q in
            let (queues, failures, raw) = shared
            var rng = TestRandom(seed: UInt64(q) + 100)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 4096)
            defer { buffer.deallocate() }
            var completion = [IOCompletion](repeating: IOCompletion(tag: 0, result: 0), count: 1)
            for _ in 0..<300 {
                let offset = rng.below(raw.count / 512) * 512
                let length = min(raw.count - offset, 512 * (1 + rng.below(64)))
                var iov = iovec(iov_base: buffer, iov_len: length)
                queues[q].prepareRead(offset: UInt64(offset), iovecs: &iov, count: 1, tag: 1)
                queues[q].submit()
                // A miss parks until the pool decodes the chunk.
                while completion.withUnsafeMutableBufferPointer({ queues[q].reap(into: $0) }) == 0 {
                    var pfd = pollfd(fd: queues[q].completionFD, events: Int16(POLLIN), revents: 0)
                    if poll(&pfd, 1, 100) > 0 {
                        var value: UInt64 = 0
                        _ = read(queues[q].completionFD, &value, 8)
                    }
                }
                let ok = completion[0].result == Int32(length)
                    && memcmp(buffer, raw.withUnsafeBytes { $0.baseAddress! + offset }, length) == 0
                if !ok { failures[q] += 1 }
            }
        }
        XCTAssertEqual((0..<4).map { failures[$0] }, [0, 0, 0, 0])
        let stats = factory.cache!.statistics()
        XCTAssertGreaterThan(stats.hits, 0)
        XCTAssertLessThanOrEqual(stats.held, factory.cache!.capacityChunks)
    }

    func testSequentialReadsPrefetchTheNextChunk() throws {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: 1 << 20, seed: 14)
        let image = try packImage(raw, in: dir)
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, cacheBytes: 1 << 20))
        let queue = try QueueDriver(factory, depth: 4)
        for chunk in 0..<8 {
            XCTAssertTrue(queue.read(UInt64(chunk * 4096), 4096).bytes == Array(raw[chunk * 4096..<(chunk + 1) * 4096]))
        }
        let deadline = monotonicSeconds() + 5
        while !(factory.cache!.contains(8)) && monotonicSeconds() < deadline { usleep(1000) }
        XCTAssertTrue(factory.cache!.contains(8), "chunk 8 was not read ahead")
        XCTAssertGreaterThanOrEqual(factory.poolStatistics.decoded, 8)
    }
}

/// Runs `body(0..<n)` on n threads and waits for all of them.
func runConcurrently(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    var threads: [NamedThread] = []
    for i in 0..<n { threads.append(try! NamedThread { body(i) }) }
    for t in threads { t.join() }
}
