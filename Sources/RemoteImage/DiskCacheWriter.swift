import Glibc
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
    // Guarded by `mutex`.
    private var queued: [Int] = []
    private var stopping = false
    private var cond = pthread_cond_t()
    private var mutex = pthread_mutex_t()
    private var thread: pthread_t?

    init(disk: DiskChunkCache, memory: ChunkCache, limit: Int, logger: Logger, stats: RemoteStats) {
        self.disk = disk
        self.memory = memory
        self.limit = limit
        self.logger = logger
        self.stats = stats
        queued.reserveCapacity(limit)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let w = Unmanaged<DiskCacheWriter>.fromOpaque(arg!).takeRetainedValue()
            _ = "vb-diskcache".withCString { pthread_setname_np(pthread_self(), $0) }
            w.run()
            return nil
        }, box)
        precondition(rc == 0, "cannot start the disk cache writer")
        thread = t
    }

    /// Drains what is queued, makes it durable, and stops the thread.
    func stop() {
        locked { stopping = true }
        signal()
        if let t = thread { pthread_join(t, nil) }
        thread = nil
    }

    /// Queues `chunk` (just inserted in the memory tier); false if dropped.
    @discardableResult
    func offer(_ chunk: Int) -> Bool {
        let taken: Bool = locked {
            guard queued.count < limit else { return false }
            queued.append(chunk)
            return true
        }
        if taken { signal() } else { RemoteStats.bump(stats.diskWritesSkipped) }
        return taken
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }

    private func signal() {
        pthread_mutex_lock(&mutex)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    private func run() {
        pthread_mutex_lock(&mutex)
        while true {
            if !queued.isEmpty {
                let chunk = queued.removeFirst()
                pthread_mutex_unlock(&mutex)
                let written = memory.withChunk(chunk) { disk.store(chunk, from: $0) }
                if !written { RemoteStats.bump(stats.diskWritesSkipped) }
                persist(force: false)
                pthread_mutex_lock(&mutex)
                continue
            }
            if stopping { break }
            var deadline = timespec()
            clock_gettime(CLOCK_REALTIME, &deadline)
            deadline.tv_sec += 1
            pthread_cond_timedwait(&cond, &mutex, &deadline)
            pthread_mutex_unlock(&mutex)
            persist(force: false)
            pthread_mutex_lock(&mutex)
        }
        pthread_mutex_unlock(&mutex)
        persist(force: true)
    }

    private func persist(force: Bool) {
        do throws(RemoteError) { try disk.persist(force: force) } catch { logger.warning("\(error)") }
    }
}
