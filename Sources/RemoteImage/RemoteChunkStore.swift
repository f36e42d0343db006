import ImageOverlay
import Glibc
import SystemSupport
import Logging
import Synchronization
import ZstdImage

/// The tiers of one remote object, chunk by chunk: a bounded in-memory LRU
/// (shared by all queues, sharded locks), then the disk cache, then the
/// network through the `RangeFetcher`. Concurrent misses on one chunk share
/// one fetch (single flight): the first asks, the others add their queue to
/// its waiter mask, and all are woken when it lands or fails. Never blocks
/// a queue thread on the network: lookups are local, misses only enqueue.
/// Chunks are spread over the fetchers (lanes, one thread each) by index, so
/// receiving and copying bodies can use more than one core.
/// Owns the fetchers, the caches and the in-flight table (one mutex, taken on
/// misses and fetch completions only).
public final class RemoteChunkStore: @unchecked Sendable, RangeFetcherDelegate {
    public let objectSize: UInt64
    public let chunkSize: Int
    public let chunkCount: Int
    let chunkShift: Int
    let memory: ChunkCache
    let disk: DiskChunkCache?
    let diskWriter: DiskCacheWriter?
    let fetchers: [RangeFetcher]
    public let stats: RemoteStats
    let logger: Logger
    let name: String

    /// Queue slots for wakers; slot `blockingSlot` serves open-time blocking reads.
    static let maxWakers = 64
    static let blockingSlot = 63

    private struct Flight {
        var waiters: UInt64
        var urgent: Bool
    }
    private struct State {
        var inFlight: [Int: Flight] = [:]
        /// Chunk -> failure serial of its last failed fetch (cleared when it lands).
        var failures: [Int: UInt64] = [:]
        var failureSerial: UInt64 = 0
        var changedReason: String?
    }
    private let state = Guarded(State())
    private let wakers = Guarded([QueueWaker?](repeating: nil, count: RemoteChunkStore.maxWakers))
    /// Set once the remote object is known to have changed: every miss fails.
    let objectChanged = Atomic<Bool>(false)

    init(objectSize: UInt64, chunkSize: Int, memoryBytes: UInt64, disk: DiskChunkCache?, fetchers: [RangeFetcher],
         stats: RemoteStats, name: String, logger: Logger) throws(RemoteError) {
        self.objectSize = objectSize
        self.chunkSize = chunkSize
        chunkCount = Int((objectSize + UInt64(chunkSize) - 1) / UInt64(chunkSize))
        chunkShift = chunkSize.trailingZeroBitCount
        guard let memory = ChunkCache(capacityBytes: max(memoryBytes, UInt64(chunkSize) * 8), chunkSize: chunkSize) else {
            throw .cache("memory tier too small")
        }
        self.memory = memory
        self.disk = disk
        diskWriter = disk.map { DiskCacheWriter(disk: $0, memory: memory, limit: 64, logger: logger, stats: stats) }
        diskWriter?.start()
        precondition(!fetchers.isEmpty)
        self.fetchers = fetchers
        self.stats = stats
        self.name = name
        self.logger = logger
        for f in fetchers { f.delegate = self }
    }

    func register(_ waker: QueueWaker, slot: Int) { wakers.withLock { $0[slot] = waker } }
    func unregister(slot: Int) { wakers.withLock { $0[slot] = nil } }

    @inline(__always)
    func chunkStart(_ chunk: Int) -> UInt64 { UInt64(chunk) << UInt64(chunkShift) }

    @inline(__always)
    func chunkLength(_ chunk: Int) -> Int { Int(min(UInt64(chunkSize), objectSize - chunkStart(chunk))) }

    /// Whether `chunk` can be read without the network.
    func isLocal(_ chunk: Int) -> Bool {
        memory.contains(chunk) || (disk?.isPresent(chunk) ?? false)
    }

    /// Runs `body` on the local bytes of `chunk`: from memory, or from disk
    /// through `spare` (a chunk-sized buffer of the caller's; the chunk is
    /// then promoted to memory and `spare` swapped for a free buffer). False
    /// when the chunk is not local.
    func withLocalChunk(_ chunk: Int, spare: inout UnsafeMutableRawPointer, _ body: (UnsafeRawPointer) -> Void) -> Bool {
        if memory.withChunk(chunk, body) {
            RemoteStats.bump(stats.memoryHits)
            return true
        }
        guard let disk, disk.read(chunk, into: spare) else { return false }
        RemoteStats.bump(stats.diskHits)
        body(UnsafeRawPointer(spare))
        memory.insert(chunk, buffer: &spare)
        return true
    }

    /// Copies object bytes `[offset, offset + count)` (in range: checked by the
    /// caller) from the local tiers into `buffer`, stopping at the first chunk
    /// that is not local: the bytes copied, and that chunk (nil when all were).
    func copyLocal(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64,
                   spare: inout UnsafeMutableRawPointer) -> (copied: Int, missing: Int?) {
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let chunk = Int(position >> UInt64(chunkShift))
            let within = Int(position - chunkStart(chunk))
            let n = min(count - done, chunkLength(chunk) - within)
            let copied = withLocalChunk(chunk, spare: &spare) { memcpy(buffer + done, $0 + within, n) }
            guard copied else { return (done, chunk) }
            done += n
        }
        return (done, nil)
    }

    /// Asks for `chunk` unless it is local or already coming; `waiter` (a waker
    /// slot) is woken when it lands or fails. Returns false if the object changed
    /// (nothing will be fetched any more).
    @discardableResult
    func request(_ chunk: Int, waiter: Int?, urgent: Bool) -> Bool {
        guard chunk >= 0 && chunk < chunkCount else { return true }
        if objectChanged.load(ordering: .relaxed) { return false }
        let bit: UInt64 = waiter.map { 1 << UInt64($0) } ?? 0
        enum Action { case local, joined, enqueue, promote }
        let action: Action = state.withLock { s in
            if var f = s.inFlight[chunk] {
                f.waiters |= bit
                let promote = urgent && !f.urgent
                f.urgent = f.urgent || urgent
                s.inFlight[chunk] = f
                return promote ? .promote : .joined
            }
            // Checked under the lock: a fetch landing now has already cached the chunk.
            if memory.contains(chunk) || (disk?.isPresent(chunk) ?? false) { return .local }
            s.inFlight[chunk] = Flight(waiters: bit, urgent: urgent)
            return .enqueue
        }
        switch action {
        case .local: wake(mask: bit)  // it landed between the caller's miss and now: retry at once
        case .joined: break
        case .enqueue: lane(chunk).enqueue(chunk, urgent: urgent)
        case .promote: lane(chunk).promote(chunk)
        }
        return true
    }

    @inline(__always)
    func lane(_ chunk: Int) -> RangeFetcher { fetchers[chunk % fetchers.count] }

    /// Background fetches waiting for a connection, over all lanes.
    var backgroundBacklog: Int { fetchers.reduce(0) { $0 + $1.backgroundBacklog } }

    func startFetchers() { for f in fetchers { f.start() } }
    func stopFetchers() { for f in fetchers { f.stop() } }

    /// Whether a fetch of `chunk` is queued or running.
    func isInFlight(_ chunk: Int) -> Bool { state.withLock { $0.inFlight[chunk] != nil } }

    /// The current failure serial: a waiter remembers it and later asks `failedSince`.
    var failureSerial: UInt64 { state.withLock { $0.failureSerial } }

    /// True if `chunk`'s fetch failed after serial `serial`, or the object changed.
    func failedSince(_ chunk: Int, serial: UInt64) -> Bool {
        if objectChanged.load(ordering: .relaxed) { return true }
        return state.withLock { s in (s.failures[chunk] ?? 0) > serial }
    }

    /// Forgets a chunk whose bytes proved bad (a zstd frame failing its checksum).
    func discard(_ chunk: Int) {
        memory.remove(chunk)
        disk?.forget(chunk)
    }

    // MARK: - RangeFetcherDelegate (fetcher thread)

    func fetched(_ job: FetchJob, buffer: inout UnsafeMutableRawPointer, length: Int) {
        memory.insert(job.chunk, buffer: &buffer)
        let waiters: UInt64 = state.withLock { s in
            s.failures[job.chunk] = nil
            return s.inFlight.removeValue(forKey: job.chunk)?.waiters ?? 0
        }
        wake(mask: waiters)
        // After the wake: a full disk queue holds this fetcher back, not the reader.
        diskWriter?.offer(job.chunk)
    }

    func fetchFailed(_ job: FetchJob, reason: String, objectChanged changed: Bool) {
        if changed, !objectChanged.exchange(true, ordering: .acquiringAndReleasing) {
            logger.error("\(name): \(reason); reads of chunks not cached now fail (restart the device to use the new object)")
        }
        logger.error("\(name): chunk \(job.chunk) (bytes \(chunkStart(job.chunk))+\(chunkLength(job.chunk))): \(reason)")
        let waiters: UInt64 = state.withLock { s in
            s.failureSerial += 1
            s.failures[job.chunk] = s.failureSerial
            if changed { s.changedReason = reason }
            return s.inFlight.removeValue(forKey: job.chunk)?.waiters ?? 0
        }
        wake(mask: waiters)
    }

    private func wake(mask: UInt64) {
        guard mask != 0 else { return }
        wakers.withLock { w in
            var m = mask
            while m != 0 {
                let slot = m.trailingZeroBitCount
                m &= m - 1
                w[slot]?.wake()
            }
        }
    }

    /// Writes out what the disk writer holds and makes the disk tier durable (shutdown).
    func persist() {
        diskWriter?.stop()
        do throws(RemoteError) { try disk?.persist(force: true) } catch { logger.warning("\(error)") }
    }
}
