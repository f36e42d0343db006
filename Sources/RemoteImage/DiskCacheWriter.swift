import ImageOverlay
import Glibc
import SystemSupport
import Logging
import ZstdImage

/// Moves fetched chunks onto the disk tier off the fetcher thread: the fetcher
/// only queues the chunk's index and goes back to the network; this thread
/// writes the chunk straight out of the memory tier (under its shard lock, no
/// copy), hashes it, and periodically makes the disk cache durable
/// (fdatasync + metadata). A chunk evicted from memory before its turn, or
/// offered while the queue is full (the disk is slower than the network), is
/// simply not written to disk and may be fetched again later. Owns the thread
/// and the queue.
final class DiskCacheWriter: @unchecked Sendable {
    let disk: DiskChunkCache
    let memory: ChunkCache
    let limit: Int
    let logger: Logger
    let stats: RemoteStats
    // Guarded by `monitor`.
    private var queued: [Int] = []
    private var stopping = false
    private let monitor = Monitor()
    private var thread: NamedThread?

    init(disk: DiskChunkCache, memory: ChunkCache, limit: Int, logger: Logger, stats: RemoteStats) {
        self.disk = disk
        self.memory = memory
        self.limit = limit
        self.logger = logger
        self.stats = stats
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

    /// Queues `chunk` (just inserted in the memory tier); false if dropped.
    @discardableResult
    func offer(_ chunk: Int) -> Bool {
        let taken: Bool = monitor.withLock {
            guard queued.count < limit else { return false }
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
