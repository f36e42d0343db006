import Glibc
import Logging

/// Moves fetched chunks onto the disk tier off the fetcher thread: the fetcher
/// copies a chunk into one of a few pooled buffers and goes back to the
/// network; this thread writes, hashes and periodically makes the disk cache
/// durable (fdatasync + metadata). When every buffer is busy (the disk is
/// slower than the network) a chunk is simply not written to disk: it stays
/// in memory and may be fetched again later. Owns the thread and the pool.
final class DiskCacheWriter: @unchecked Sendable {
    let disk: DiskChunkCache
    let logger: Logger
    let stats: RemoteStats
    // Guarded by `mutex`.
    private var free: [UnsafeMutableRawPointer]
    private var queued: [(Int, UnsafeMutableRawPointer)] = []
    private var stopping = false
    private var cond = pthread_cond_t()
    private var mutex = pthread_mutex_t()
    private var thread: pthread_t?
    private let all: [UnsafeMutableRawPointer]

    init(disk: DiskChunkCache, buffers: Int, logger: Logger, stats: RemoteStats) {
        self.disk = disk
        self.logger = logger
        self.stats = stats
        all = (0..<buffers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: disk.identity.chunkSize, alignment: 4096) }
        free = all
        queued.reserveCapacity(buffers)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit { all.forEach { $0.deallocate() } }

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

    /// Queues a copy of `chunk` (length bytes at `data`); false if dropped.
    @discardableResult
    func offer(_ chunk: Int, data: UnsafeRawPointer, length: Int) -> Bool {
        guard let buffer = locked({ free.popLast() }) else {
            RemoteStats.bump(stats.diskWritesSkipped)
            return false
        }
        memcpy(buffer, data, length)
        locked { queued.append((chunk, buffer)) }
        signal()
        return true
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
                let (chunk, buffer) = queued.removeFirst()
                pthread_mutex_unlock(&mutex)
                disk.store(chunk, from: buffer)
                persist(force: false)
                pthread_mutex_lock(&mutex)
                free.append(buffer)
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
