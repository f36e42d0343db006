import ImageOverlay
import Glibc
import SystemSupport
import Logging
import ZstdImage

/// Moves fetched chunks onto the disk tier off the fetcher thread: the fetcher
/// only queues the chunk's index and goes back to the network; this thread
/// writes the chunk straight out of the memory tier (under its shard lock, no
/// copy), hashes it, and periodically makes the disk cache durable
/// (fdatasync + metadata). When the queue is full (the disk is slower than
/// the network) the fetcher waits for room, up to `offerWaitSeconds`: the network
/// then runs at the disk's pace rather than chunks going unwritten. A chunk
/// evicted from memory before its turn, or still without room after that
/// wait, is not written to disk and may be fetched again later. Owns the
/// thread and the queue.
final class DiskCacheWriter: @unchecked Sendable {
    let disk: DiskChunkCache
    let memory: ChunkCache
    let limit: Int
    let logger: Logger
    let stats: RemoteStats
    /// How long `offer` waits for room in a full queue before dropping.
    let offerWaitSeconds: Double
    // Guarded by `monitor`.
    private var queued: [Int] = []
    private var stopping = false
    private let monitor = Monitor()
    private var thread: NamedThread?

    init(disk: DiskChunkCache, memory: ChunkCache, limit: Int, logger: Logger, stats: RemoteStats,
         offerWaitSeconds: Double = 5) {
        self.disk = disk
        self.memory = memory
        self.limit = limit
        self.logger = logger
        self.stats = stats
        self.offerWaitSeconds = offerWaitSeconds
        queued.reserveCapacity(limit)
    }

    func start() {
        do {
            thread = try NamedThread(name: "vb-diskcache") { [self] in run() }
        } catch {
            preconditionFailure("cannot start the disk cache writer: \(error)")
        }
    }

    /// Drains what is queued, makes it durable, and stops the thread.
    func stop() {
        monitor.withLock {
            stopping = true
            monitor.broadcast()
        }
        thread?.join()
        thread = nil
    }

    /// Queues `chunk` (just inserted in the memory tier), waiting while the
    /// queue is full (at most `offerWaitSeconds`); false if dropped.
    @discardableResult
    func offer(_ chunk: Int) -> Bool {
        let taken: Bool = monitor.withLock {
            if queued.count >= limit {
                let deadline = monotonicSeconds() + offerWaitSeconds
                while queued.count >= limit && !stopping {
                    let left = deadline - monotonicSeconds()
                    guard left > 0 else { return false }
                    monitor.wait(nanoseconds: Int(left * 1e9) + 1)
                }
                if stopping { return false }
            }
            queued.append(chunk)
            monitor.broadcast()
            return true
        }
        if !taken { RemoteStats.bump(stats.diskWritesSkipped) }
        return taken
    }

    private func run() {
        monitor.lock()
        while true {
            if !queued.isEmpty {
                let chunk = queued.removeFirst()
                monitor.broadcast()   // a fetcher may wait for room
                monitor.unlock()
                // Eviction (fsync, metadata, punch) must not run under a memory shard lock.
                let written = disk.makeRoom() && memory.withChunk(chunk) { disk.store(chunk, from: $0) }
                if !written { RemoteStats.bump(stats.diskWritesSkipped) }
                persist(force: false)
                monitor.lock()
                continue
            }
            if stopping { break }
            monitor.wait(nanoseconds: 1_000_000_000)
            monitor.unlock()
            persist(force: false)
            monitor.lock()
        }
        monitor.unlock()
        persist(force: true)
    }

    private func persist(force: Bool) {
        do throws(RemoteError) { try disk.persist(force: force) } catch { logger.warning("\(error)") }
    }
}
