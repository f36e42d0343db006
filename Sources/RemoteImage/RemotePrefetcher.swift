import ImageOverlay
import SystemSupport
import Glibc
import Logging
import Synchronization
import ZstdImage

/// `--prefetch`: warms the whole object in the background, in chunk order,
/// at no more than `bytesPerSecond`, and only while the fetcher's background
/// backlog is short (guest misses go first: the fetcher keeps a connection
/// for them). Owns its thread; stops when every chunk is local or on `stop()`.
final class RemotePrefetcher: @unchecked Sendable {
    let store: RemoteChunkStore
    let bytesPerSecond: UInt64
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private var thread: NamedThread?

    init(store: RemoteChunkStore, bytesPerSecond: UInt64, logger: Logger) {
        self.store = store
        self.bytesPerSecond = bytesPerSecond
        self.logger = logger
    }

    func start() {
        do {
            thread = try NamedThread(name: "vb-prefetch") { [self] in run() }
        } catch {
            logger.warning("prefetch thread not started: \(error)")
        }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        thread?.join()
        thread = nil
    }

    private func run() {
        let started = monotonicSeconds()
        var requested: UInt64 = 0
        var chunk = 0
        var skipped = 0
        let backlogLimit = 2 * store.fetchers.count
        while chunk < store.chunkCount, !stopping.load(ordering: .acquiring) {
            if store.objectChanged.load(ordering: .relaxed) { return }
            if store.isLocal(chunk) {
                chunk += 1
                skipped += 1
                continue
            }
            // Rate: never ahead of bytesPerSecond since the start.
            let allowed = (monotonicSeconds() - started) * Double(bytesPerSecond)
            if Double(requested) > allowed || store.backgroundBacklog >= backlogLimit {
                usleep(10_000)
                continue
            }
            store.request(chunk, waiter: nil, urgent: false)
            RemoteStats.bump(store.stats.prefetchRequests)
            requested += UInt64(store.chunkLength(chunk))
            chunk += 1
        }
        logger.info("prefetch: requested \(humanBytes(requested)) (\(skipped) chunks were already local) in \(Int(monotonicSeconds() - started)) s")
    }
}
