import ImageOverlay
import SystemSupport
import Synchronization

/// Counters of one remote backend, shared by the queue threads, the fetcher
/// and the prefetcher (relaxed atomics: statistics, not synchronisation).
public final class RemoteStats: Sendable {
    public let memoryHits = Atomic<UInt64>(0)
    public let diskHits = Atomic<UInt64>(0)
    /// Guest reads that had to wait for the network.
    public let parkedReads = Atomic<UInt64>(0)
    public let chunksFetched = Atomic<UInt64>(0)
    public let bytesFetched = Atomic<UInt64>(0)
    public let fetchRetries = Atomic<UInt64>(0)
    public let fetchFailures = Atomic<UInt64>(0)
    public let readaheadRequests = Atomic<UInt64>(0)
    public let prefetchRequests = Atomic<UInt64>(0)
    /// Chunks `prefetch-trace=` asked for (those not local when their turn came).
    public let traceRequests = Atomic<UInt64>(0)
    /// Fetched chunks not written to the disk tier (its writer was busy, or they left memory first).
    public let diskWritesSkipped = Atomic<UInt64>(0)
    public let latencyTotalMicros = Atomic<UInt64>(0)
    /// Time fetches spent queued before their first attempt started (all fetches).
    public let queuedTotalMicros = Atomic<UInt64>(0)
    public let fetchesStarted = Atomic<UInt64>(0)
    public let latencyMaxMicros = Atomic<UInt64>(0)
    /// Fetch latency histogram: bucket i counts fetches under `latencyBucketsMillis[i]` ms (last: the rest).
    public static let latencyBucketsMillis: [UInt64] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
    private let buckets = Guarded([UInt64](repeating: 0, count: RemoteStats.latencyBucketsMillis.count + 1))

    public init() {}

    @inline(__always)
    static func bump(_ counter: borrowing Atomic<UInt64>, by n: UInt64 = 1) {
        counter.wrappingAdd(n, ordering: .relaxed)
    }

    func recordFetch(bytes: Int, micros: UInt64) {
        Self.bump(chunksFetched)
        Self.bump(bytesFetched, by: UInt64(bytes))
        Self.bump(latencyTotalMicros, by: micros)
        var seen = latencyMaxMicros.load(ordering: .relaxed)
        while micros > seen {
            let (done, now) = latencyMaxMicros.compareExchange(expected: seen, desired: micros, ordering: .relaxed)
            if done { break }
            seen = now
        }
        let ms = micros / 1000
        let i = Self.latencyBucketsMillis.firstIndex { ms < $0 } ?? Self.latencyBucketsMillis.count
        buckets.withLock { $0[i] += 1 }
    }

    /// Name/value pairs, in a stable order, for `vduse-blk stats`.
    public func snapshot() -> [(String, UInt64)] {
        let fetched = chunksFetched.load(ordering: .relaxed)
        let started = fetchesStarted.load(ordering: .relaxed)
        var rows: [(String, UInt64)] = [
            ("hits_memory", memoryHits.load(ordering: .relaxed)),
            ("hits_disk", diskHits.load(ordering: .relaxed)),
            ("reads_waited_for_network", parkedReads.load(ordering: .relaxed)),
            ("chunks_fetched", fetched),
            ("bytes_fetched", bytesFetched.load(ordering: .relaxed)),
            ("fetch_retries", fetchRetries.load(ordering: .relaxed)),
            ("fetch_failures", fetchFailures.load(ordering: .relaxed)),
            ("readahead_requests", readaheadRequests.load(ordering: .relaxed)),
            ("prefetch_requests", prefetchRequests.load(ordering: .relaxed)),
            ("trace_prefetch_requests", traceRequests.load(ordering: .relaxed)),
            ("disk_writes_skipped", diskWritesSkipped.load(ordering: .relaxed)),
            ("fetch_latency_avg_us", fetched == 0 ? 0 : latencyTotalMicros.load(ordering: .relaxed) / fetched),
            ("fetch_latency_max_us", latencyMaxMicros.load(ordering: .relaxed)),
            ("fetch_queued_avg_us", started == 0 ? 0 : queuedTotalMicros.load(ordering: .relaxed) / started),
        ]
        let counts = buckets.withLock { $0 }
        for (i, limit) in Self.latencyBucketsMillis.enumerated() {
            rows.append(("fetch_latency_under_\(limit)ms", counts[i]))
        }
        rows.append(("fetch_latency_over_\(Self.latencyBucketsMillis.last!)ms", counts[Self.latencyBucketsMillis.count]))
        return rows
    }
}
