import ImageOverlay
import SystemSupport
import Glibc
import Logging
import Synchronization
import ZstdImage

/// Background fetching ahead of the guest, on its own thread:
/// - `--prefetch` (`.wholeObject`): warms the whole object in chunk order at
///   no more than the given bytes per second;
/// - `--prefetch-trace` (`.trace`): fetches a recorded access order as fast
///   as the connections allow.
/// Either way only while the fetchers' background backlog is short (guest
/// misses go first: they are urgent, and a lane keeps a connection for
/// them), skipping chunks already local. Owns its thread; stops when its
/// plan is done or on `stop()`.
final class RemotePrefetcher: @unchecked Sendable {
    /// What to fetch, in which order.
    enum Plan {
        case wholeObject(bytesPerSecond: UInt64)
        case trace([Int])
    }

    let store: RemoteChunkStore
    let plan: Plan
    let backlogLimit: Int
    let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private var thread: NamedThread?

    init(store: RemoteChunkStore, plan: Plan, connections: Int, logger: Logger) {
        self.store = store
        self.plan = plan
        backlogLimit = max(2, 2 * connections)
        self.logger = logger
    }

    /// Starts the thread (once; later calls do nothing).
    func start() {
        guard thread == nil else { return }
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

    private var halted: Bool {
        stopping.load(ordering: .acquiring) || store.objectChanged.load(ordering: .relaxed)
    }

    private func run() {
        let started = monotonicSeconds()
        var requested: UInt64 = 0
        var requestedChunks = 0
        var local = 0
        let order: [Int]?
        let rate: UInt64?
        switch plan {
        case .wholeObject(let bytesPerSecond): (order, rate) = (nil, bytesPerSecond)
        case .trace(let chunks): (order, rate) = (chunks, nil)
        }
        let total = order?.count ?? store.chunkCount
        for i in 0..<total {
            let chunk = order?[i] ?? i
            if halted { return }
            if store.isLocal(chunk) {
                local += 1
                continue
            }
            // Never ahead of the rate since the start, never more than the backlog limit queued.
            while store.backgroundBacklog >= backlogLimit
                    || rate.map({ Double(requested) > (monotonicSeconds() - started) * Double($0) }) == true {
                if halted { return }
                usleep(2_000)
            }
            store.request(chunk, waiter: nil, urgent: false)
            if rate == nil { RemoteStats.bump(store.stats.traceRequests) } else { RemoteStats.bump(store.stats.prefetchRequests) }
            requested += UInt64(store.chunkLength(chunk))
            requestedChunks += 1
        }
        let what = rate == nil ? "prefetch-trace: requested \(requestedChunks) of \(total) chunks"
                               : "prefetch: requested \(humanBytes(requested))"
        logger.info("\(what) (\(local) chunks were already local) in \(Int((monotonicSeconds() - started) * 1000)) ms")
    }
}
