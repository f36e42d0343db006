import SystemSupport
import Glibc
import Logging
import Synchronization

/// `prefetch-trace=`: replays a recorded access order at a cold start,
/// ahead of the guest: requests the trace's chunks in order as background
/// fetches, keeping every connection busy (a short backlog per connection)
/// while guest misses still go first (they are urgent). Chunks already
/// local are skipped. Owns its thread; stops when the trace is done or on `stop()`.
final class TracePrefetcher: @unchecked Sendable {
    let store: RemoteChunkStore
    let chunks: [Int]
    let backlogLimit: Int
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private var thread: NamedThread?

    init(store: RemoteChunkStore, chunks: [Int], connections: Int, logger: Logger) {
        self.store = store
        self.chunks = chunks
        backlogLimit = max(2, 2 * connections)
        self.logger = logger
    }

    func start() {
        do {
            thread = try NamedThread(name: "vb-trace") { [self] in run() }
        } catch {
            logger.warning("trace prefetch thread not started: \(error)")
        }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        thread?.join()
        thread = nil
    }

    private func run() {
        let started = monotonicSeconds()
        var requested = 0
        var local = 0
        for chunk in chunks {
            if stopping.load(ordering: .acquiring) || store.objectChanged.load(ordering: .relaxed) { return }
            if store.isLocal(chunk) {
                local += 1
                continue
            }
            while store.backgroundBacklog >= backlogLimit {
                if stopping.load(ordering: .acquiring) { return }
                usleep(2_000)
            }
            store.request(chunk, waiter: nil, urgent: false)
            RemoteStats.bump(store.stats.traceRequests)
            requested += 1
        }
        let ms = Int((monotonicSeconds() - started) * 1000)
        logger.info("prefetch-trace: requested \(requested) of \(chunks.count) chunks (\(local) were local) in \(ms) ms")
    }
}
