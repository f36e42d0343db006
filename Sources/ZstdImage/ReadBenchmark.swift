import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc

/// Measures 4 KiB random-read IOPS of any backend from one or more queue
/// threads (for `vduse-blk image bench-read`; never used by tests as a timed
/// assertion). Each queue keeps `depth` reads prepared per submit. Owns
/// nothing beyond one run's buffers.
public enum ReadBenchmark {
    public struct Result: Sendable {
        public var reads: Int
        public var seconds: Double
        public var failures: Int
        public var iops: Double { Double(reads) / max(seconds, 1e-9) }
    }

    /// Random aligned `blockSize` reads over the whole disk for about `seconds`.
    public static func randomReads(factory: any BlockBackendFactory, seconds: Double, queues: Int = 1,
                                   depth: Int = 16, blockSize: Int = 4096, seed: UInt64 = 1) throws -> Result {
        let blocks = Int(factory.geometry.capacityBytes / UInt64(blockSize))
        precondition(blocks > 0 && queues > 0 && depth > 0)
        let handles = try (0..<queues).map { try factory.makeQueueBackend(queueIndex: $0, depth: depth) }
        let results = UnsafeMutablePointer<(Int, Int)>.allocate(capacity: queues)
        results.initialize(repeating: (0, 0), count: queues)
        defer { results.deallocate() }
        nonisolated(unsafe) let shared = (handles, results)
        let started = monotonicSeconds()
        let deadline = started + seconds
        var threads: [NamedThread] = []
        for q in 0..<queues {
            threads.append(try NamedThread {
                let (handles, results) = shared
                results[q] = run(handles[q], blocks: blocks, blockSize: blockSize, depth: depth,
                                 seed: seed &+ UInt64(q) &* 7919, until: deadline)
            })
        }
        for t in threads { t.join() }
        let elapsed = monotonicSeconds() - started
        var reads = 0, failures = 0
        for q in 0..<queues {
            reads += results[q].0
            failures += results[q].1
        }
        return Result(reads: reads, seconds: elapsed, failures: failures)
    }

    /// Chunks per second one thread decompresses (and verifies): every chunk
    /// of `image` once, in order, from a decoder of its own. The image file
    /// is expected in the page cache (read it once before).
    public static func singleThreadDecodeRate(image: SeekableImage) throws(ImageError) -> Double {
        let decoder = try ChunkDecoder(image: image)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: image.chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        let started = monotonicSeconds()
        for index in 0..<image.chunkCount { try decoder.decode(index, into: buffer) }
        return Double(image.chunkCount) / max(monotonicSeconds() - started, 1e-9)
    }

    /// Reads the whole disk once in 1 MiB requests (to warm caches).
    public static func readAll(factory: any BlockBackendFactory) throws {
        let queue = try factory.makeQueueBackend(queueIndex: 0, depth: 1)
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        var completion = [IOCompletion(tag: 0, result: 0)]
        var offset: UInt64 = 0
        let capacity = factory.geometry.capacityBytes
        while offset < capacity {
            var iov = iovec(iov_base: buffer, iov_len: Int(min(UInt64(size), capacity - offset)))
            queue.prepareRead(offset: offset, iovecs: &iov, count: 1, tag: 0)
            queue.submit()
            while completion.withUnsafeMutableBufferPointer({ queue.reap(into: $0) }) == 0 {
                guard queue.completionFD >= 0 else { break }
                var pfd = pollfd(fd: queue.completionFD, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, 100) > 0 {
                    var value: UInt64 = 0
                    _ = read(queue.completionFD, &value, 8)
                }
            }
            offset += UInt64(iov.iov_len)
        }
    }

    private static func run(_ queue: any QueueBackend, blocks: Int, blockSize: Int, depth: Int, seed: UInt64,
                            until deadline: Double) -> (Int, Int) {
        let buffers = UnsafeMutableRawPointer.allocate(byteCount: blockSize * depth, alignment: 4096)
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: depth)
        let completions = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: depth)
        defer {
            buffers.deallocate()
            iovecs.deallocate()
            completions.deallocate()
        }
        var state = seed | 1
        var reads = 0, failures = 0
        while true {
            for i in 0..<depth {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                iovecs[i] = iovec(iov_base: buffers + i * blockSize, iov_len: blockSize)
                let block = Int(state % UInt64(blocks))
                queue.prepareRead(offset: UInt64(block * blockSize), iovecs: iovecs + i, count: 1, tag: UInt32(i))
            }
            queue.submit()
            var done = 0
            while done < depth {
                let n = queue.reap(into: completions)
                for j in 0..<n where completions[j].result != Int32(blockSize) { failures += 1 }
                done += n
                if n == 0 && queue.completionFD >= 0 {
                    var pfd = pollfd(fd: queue.completionFD, events: Int16(POLLIN), revents: 0)
                    if poll(&pfd, 1, 100) > 0 {
                        var value: UInt64 = 0
                        _ = read(queue.completionFD, &value, 8)
                    }
                }
            }
            reads += depth
            if reads % (depth * 64) == 0 && monotonicSeconds() >= deadline { break }
        }
        return (reads, failures)
    }
}
