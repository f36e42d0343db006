import Glibc
import ImageOverlay
import SystemSupport

/// Decompresses chunks off the queue threads: a few worker threads, each
/// with its own decoder and chunk buffer, decode requested chunks into the
/// shared `ChunkCache` and wake the queues that asked (by waker slot, one bit
/// per queue). Concurrent requests of one chunk share one decode (single
/// flight). A failed decode is remembered for the queues that waited, so
/// their retry learns it from `submit` instead of waiting for ever.
/// Owns the worker threads (stopped and joined when the pool goes away) and
/// the job table; queues only enqueue (a preallocated ring, one mutex taken
/// on misses only) and never wait for a decode.
public final class DecompressionPool: Sendable {
    /// What `submit` did with a request.
    public enum Submission: Sendable, Equatable {
        /// Being decoded (now or already); the waiter is woken when it is done.
        case queued
        /// Already in the cache (it landed since the caller's miss): look again.
        case ready
        /// The decode this waiter waited for failed (reported once per waiter).
        case failed
        /// The job ring is full: decode it yourself.
        case full
    }

    /// The least cache a pool is used with (chunks), so a decoded chunk is
    /// rarely evicted before the read that asked for it copies it.
    public static let minimumCacheChunks = 16
    /// The most chunks one read may span and still be handed to the pool
    /// with `cache`: a parked read is retried from its start, so its chunks
    /// must all fit in the cache at once, with room for other queues' chunks
    /// (an eighth of it; 0 without a cache). Longer reads decode inline.
    public static func maxParkedSpan(cache: ChunkCache?) -> Int { (cache?.capacityChunks ?? 0) / 8 }
    /// Waker slots (one bit of a 64-bit mask each).
    public static let maxWaiters = 64
    /// Worker threads by default: the online CPUs, at least 2, at most 8.
    public static var defaultThreads: Int { min(8, max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }

    public let threadCount: Int
    private let state: PoolState
    private let threads: [NamedThread]

    /// A pool decoding chunks of `image` into `cache`; every worker reads
    /// frames through its own source from `makeSource` (nil: the image's file).
    public init(image: SeekableImage, cache: ChunkCache, threads: Int = DecompressionPool.defaultThreads,
                jobCapacity: Int = 256, makeSource: (() -> any ImageByteSource)? = nil) throws(ImageError) {
        precondition(threads > 0 && jobCapacity > 0)
        let state = PoolState(cache: cache, jobCapacity: jobCapacity)
        var workers: [PoolWorker] = []
        for _ in 0..<threads {
            workers.append(try PoolWorker(decoder: ChunkDecoder(image: image, source: makeSource?()),
                                          chunkSize: image.chunkSize))
        }
        var started: [NamedThread] = []
        for (i, worker) in workers.enumerated() {
            do {
                started.append(try NamedThread(name: "zstd-decode-\(i)") { state.run(worker) })
            } catch {
                state.stop()
                for t in started { t.join() }
                throw ImageError(error)
            }
        }
        self.state = state
        self.threads = started
        threadCount = threads
    }

    deinit {
        state.stop()
        for t in threads { t.join() }
    }

    /// Wakes `waker` when a chunk its queue asked for (as `slot`) is done.
    public func register(_ waker: QueueWaker, slot: Int) { state.setWaker(waker, slot: slot) }
    public func unregister(slot: Int) { state.setWaker(nil, slot: slot) }

    /// Asks for chunk `index` to be decoded into the cache; `waiter` (a waker
    /// slot, nil for readahead) is woken when it is there or has failed.
    public func submit(_ index: Int, waiter: Int?) -> Submission { state.submit(index, waiter: waiter) }

    /// Whether chunk `index` is queued or being decoded.
    public func isPending(_ index: Int) -> Bool { state.isPending(index) }

    /// (chunks decoded, decodes failed) so far.
    public func statistics() -> (decoded: Int, failed: Int) { state.statistics() }

    /// Holds the workers before their next job until `resume()` (tests: a read that must park).
    func pause() { state.setPaused(true) }
    func resume() { state.setPaused(false) }
}

/// One worker's own decoder and decompression buffer (the buffer is swapped
/// with a cache buffer on insert). Used by its thread only.
final class PoolWorker: @unchecked Sendable {
    let decoder: ChunkDecoder
    var buffer: UnsafeMutableRawPointer

    init(decoder: ChunkDecoder, chunkSize: Int) {
        self.decoder = decoder
        buffer = .allocate(byteCount: chunkSize, alignment: 4096)
    }

    deinit { buffer.deallocate() }
}

/// The pool's shared state: the job ring, the in-flight table (chunk ->
/// waiter mask), the failures not yet reported, counters and the waker
/// slots, all guarded by `monitor`. Hence `@unchecked Sendable`.
final class PoolState: @unchecked Sendable {
    private let cache: ChunkCache
    private let monitor = Monitor()
    private let ring: UnsafeMutablePointer<Int>
    private let capacity: Int
    private var head = 0
    private var count = 0
    private var stopped = false
    private var paused = false
    /// Chunks queued or being decoded -> the waiters to wake.
    private var pending: [Int: UInt64]
    /// Chunks whose decode failed -> the waiters not yet told.
    private var failures: [Int: UInt64] = [:]
    private var decoded = 0
    private var failedDecodes = 0
    private let wakers: UnsafeMutablePointer<QueueWaker?>

    init(cache: ChunkCache, jobCapacity: Int) {
        self.cache = cache
        capacity = jobCapacity
        ring = .allocate(capacity: jobCapacity)
        ring.initialize(repeating: -1, count: jobCapacity)
        pending = Dictionary(minimumCapacity: jobCapacity)
        wakers = .allocate(capacity: DecompressionPool.maxWaiters)
        wakers.initialize(repeating: nil, count: DecompressionPool.maxWaiters)
    }

    deinit {
        ring.deallocate()
        wakers.deinitialize(count: DecompressionPool.maxWaiters)
        wakers.deallocate()
    }

    func setWaker(_ waker: QueueWaker?, slot: Int) {
        precondition(slot >= 0 && slot < DecompressionPool.maxWaiters)
        monitor.withLock { wakers[slot] = waker }
    }

    func submit(_ index: Int, waiter: Int?) -> DecompressionPool.Submission {
        let bit: UInt64 = waiter.map { 1 << UInt64($0) } ?? 0
        monitor.lock()
        defer { monitor.unlock() }
        if bit != 0, let told = failures[index], told & bit != 0 {
            let left = told & ~bit
            failures[index] = left == 0 ? nil : left
            return .failed
        }
        if let waiting = pending[index] {
            pending[index] = waiting | bit
            return .queued
        }
        // Checked under the lock: a worker inserts before it clears `pending`.
        if cache.contains(index) { return .ready }
        guard count < capacity, !stopped else { return .full }
        pending[index] = bit
        ring[(head + count) % capacity] = index
        count += 1
        monitor.signal()  // one job, one worker
        return .queued
    }

    func isPending(_ index: Int) -> Bool { monitor.withLock { pending[index] != nil } }

    func statistics() -> (decoded: Int, failed: Int) { monitor.withLock { (decoded, failedDecodes) } }

    func setPaused(_ value: Bool) {
        monitor.withLock {
            paused = value
            monitor.broadcast()
        }
    }

    func stop() {
        monitor.withLock {
            stopped = true
            monitor.broadcast()
        }
    }

    /// A worker thread's loop: take a job, decode it into the cache, wake its waiters.
    func run(_ worker: PoolWorker) {
        while true {
            monitor.lock()
            while (count == 0 || paused) && !stopped { monitor.wait() }
            if stopped {
                // Nobody decodes the rest: tell their waiters (their retry decodes inline or fails).
                var orphans: UInt64 = 0
                for (_, mask) in pending { orphans |= mask }
                pending.removeAll()
                count = 0
                wakeLocked(orphans)
                monitor.unlock()
                return
            }
            let index = ring[head]
            head = (head + 1) % capacity
            count -= 1
            monitor.unlock()
            var ok = true, didDecode = false
            if !cache.contains(index) {
                do {
                    try worker.decoder.decode(index, into: worker.buffer)
                    cache.insert(index, buffer: &worker.buffer)
                    didDecode = true
                } catch {
                    ok = false
                }
            }
            monitor.lock()
            let waiters = pending.removeValue(forKey: index) ?? 0
            if ok {
                if didDecode { decoded += 1 }
            } else {
                failedDecodes += 1
                // Only waiting reads hear of it; readahead failures are found again by the read.
                if waiters != 0 { failures[index, default: 0] |= waiters }
            }
            wakeLocked(waiters)
            monitor.unlock()
        }
    }

    private func wakeLocked(_ mask: UInt64) {
        var m = mask
        while m != 0 {
            let slot = m.trailingZeroBitCount
            m &= m - 1
            wakers[slot]?.wake()
        }
    }
}
