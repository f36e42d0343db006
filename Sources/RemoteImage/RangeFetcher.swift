import ImageOverlay
import CRemote
import Glibc
import SystemSupport
import ZstdImage
import Logging
import Synchronization

/// One chunk to fetch: which, how urgent, and its retry state.
struct FetchJob: Sendable {
    var chunk: Int
    /// A guest read waits for it (background jobs are readahead and prefetch).
    var urgent: Bool
    var created: Double
    var attempt = 0
    var notBefore = 0.0
}

/// Receives finished fetches, on the fetcher thread.
protocol RangeFetcherDelegate: AnyObject, Sendable {
    /// `buffer` holds the chunk; the delegate may swap it for another buffer of the same size.
    func fetched(_ job: FetchJob, buffer: inout UnsafeMutableRawPointer, length: Int)
    func fetchFailed(_ job: FetchJob, reason: String, objectChanged: Bool)
}

/// Fetches chunks of one remote object with HTTP Range requests on its own
/// thread: a libcurl multi handle driving up to `connections` pooled
/// keep-alive easy handles in parallel. Urgent jobs (a guest is waiting)
/// go before background ones, which never take the last free connection
/// of a fetcher with more than two.
/// Each job is retried with exponential backoff and jitter until it
/// succeeds, fails for good, or runs past its deadline; nothing it rejects
/// reaches the delegate as data. Owns the thread, the multi handle and the
/// transfers; the job queues are guarded by one mutex.
final class RangeFetcher: @unchecked Sendable {
    let endpoint: RemoteEndpoint
    let objectSize: UInt64
    let chunkSize: Int
    let policy: FetchPolicy
    let etag: String?
    let lastModified: String?
    let stats: RemoteStats
    let logger: Logger
    weak var delegate: (any RangeFetcherDelegate)?

    private struct Queues {
        var urgent: [FetchJob] = []
        var background: [FetchJob] = []
        var stopping = false
    }
    private let queues = Guarded(Queues())
    private let multi: UnsafeMutableRawPointer
    private var transfers: [CurlTransfer]
    private var idle: [CurlTransfer]
    private var delayed: [FetchJob] = []
    private var thread: NamedThread?

    init(endpoint: RemoteEndpoint, objectSize: UInt64, chunkSize: Int, connections: Int, policy: FetchPolicy,
         etag: String?, lastModified: String?, stats: RemoteStats, logger: Logger) throws(RemoteError) {
        self.endpoint = endpoint
        self.objectSize = objectSize
        self.chunkSize = chunkSize
        self.policy = policy
        self.etag = etag
        self.lastModified = lastModified
        self.stats = stats
        self.logger = logger
        guard let m = curl_multi_init() else { throw .transport(url: endpoint.displayName, reason: "curl_multi_init failed") }
        multi = m
        _ = vb_curl_multi_setopt_long(m, CURLMOPT_MAX_HOST_CONNECTIONS, connections)
        _ = vb_curl_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, connections)
        var made: [CurlTransfer] = []
        for _ in 0..<connections { made.append(try CurlTransfer(capacity: chunkSize)) }
        transfers = made
        idle = made
    }

    deinit {
        curl_multi_cleanup(multi)
    }

    func start() {
        do {
            thread = try NamedThread(name: "vb-fetch") { [self] in run() }
        } catch {
            preconditionFailure("cannot start the fetcher thread: \(error)")
        }
    }

    func stop() {
        queues.withLock { $0.stopping = true }
        curl_multi_wakeup(multi)
        thread?.join()
        thread = nil
    }

    /// Queues chunk `chunk` (the caller guarantees it is not queued already).
    func enqueue(_ chunk: Int, urgent: Bool) {
        let job = FetchJob(chunk: chunk, urgent: urgent, created: monotonicSeconds())
        queues.withLock { q in if urgent { q.urgent.append(job) } else { q.background.append(job) } }
        curl_multi_wakeup(multi)
    }

    /// A guest now waits for a chunk queued in the background: move it ahead.
    func promote(_ chunk: Int) {
        queues.withLock { q in
            if let i = q.background.firstIndex(where: { $0.chunk == chunk }) {
                var job = q.background.remove(at: i)
                job.urgent = true
                q.urgent.append(job)
            }
        }
    }

    /// Background jobs waiting for a connection (the prefetcher keeps this short).
    var backgroundBacklog: Int { queues.withLock { $0.background.count } }

    // MARK: - fetcher thread

    private func run() {
        while true {
            let now = monotonicSeconds()
            let stopping = queues.withLock { $0.stopping }
            if stopping { break }
            startDueRetries(now: now)
            startQueued(now: now)
            var running: Int32 = 0
            _ = curl_multi_perform(multi, &running)
            // A finished transfer frees a connection: start what is queued before sleeping.
            if collectFinished() > 0 { continue }
            var timeout: Int32 = 1000
            if idle.count < transfers.count { timeout = 50 }
            if let next = delayed.map(\.notBefore).min() { timeout = min(timeout, max(1, Int32((next - now) * 1000))) }
            _ = curl_multi_poll(multi, nil, 0, timeout, nil)
        }
        for t in transfers where t.job != nil { _ = curl_multi_remove_handle(multi, t.easy) }
    }

    private func startDueRetries(now: Double) {
        guard !delayed.isEmpty else { return }
        var i = 0
        while i < delayed.count, !idle.isEmpty {
            if delayed[i].notBefore <= now {
                start(delayed.remove(at: i), now: now)
            } else {
                i += 1
            }
        }
    }

    private func startQueued(now: Double) {
        while !idle.isEmpty {
            let reserve = transfers.count > 2 ? 1 : 0
            let job: FetchJob? = queues.withLock { q in
                if !q.urgent.isEmpty { return q.urgent.removeFirst() }
                if idle.count > reserve, !q.background.isEmpty { return q.background.removeFirst() }
                return nil
            }
            guard let job else { return }
            start(job, now: now)
        }
    }

    private func start(_ job: FetchJob, now: Double) {
        var job = job
        job.attempt += 1
        if job.attempt == 1 {
            RemoteStats.bump(stats.fetchesStarted)
            RemoteStats.bump(stats.queuedTotalMicros, by: UInt64(max(0, (now - job.created) * 1e6)))
        }
        let remaining = job.created + policy.deadline - now
        if remaining <= 0 { return finishFailed(job, "deadline of \(policy.deadline) s passed") }
        let t = idle.removeLast()
        let first = UInt64(job.chunk) * UInt64(chunkSize)
        let length = Int(min(UInt64(chunkSize), objectSize - first))
        let headers = endpoint.headers(range: (first, first + UInt64(length) - 1), ifMatch: etag)
        t.prepare(url: endpoint.url, headers: headers, length: length, policy: policy, remaining: remaining)
        t.job = job
        t.attemptStarted = now
        _ = curl_multi_add_handle(multi, t.easy)
    }

    /// Hands finished transfers to `finish`; returns how many.
    @discardableResult
    private func collectFinished() -> Int {
        var finished = 0
        var left: Int32 = 0
        while let msg = curl_multi_info_read(multi, &left) {
            var code = CURLE_OK
            guard let easy = vb_curl_msg_done(msg, &code), let t = CurlTransfer.owner(of: easy),
                  let job = t.job else { continue }
            _ = curl_multi_remove_handle(multi, easy)
            t.job = nil
            finish(job, transfer: t, code: code)
            idle.append(t)
            finished += 1
        }
        return finished
    }

    private func finish(_ job: FetchJob, transfer t: CurlTransfer, code: CURLcode) {
        let first = UInt64(job.chunk) * UInt64(chunkSize)
        let check = ResponseCheck(first: first, length: t.expected, objectSize: objectSize, etag: etag,
                                  lastModified: lastModified)
        let transportError = code == CURLE_OK ? nil : t.errorText(code)
        switch check.judge(transportError: transportError, head: t.head, received: t.received, overflow: t.overflow) {
        case .success:
            let micros = UInt64(max(0, (monotonicSeconds() - t.attemptStarted) * 1e6))
            stats.recordFetch(bytes: t.expected, micros: micros)
            delegate?.fetched(job, buffer: &t.buffer, length: t.expected)
        case .retry(let why):
            let now = monotonicSeconds()
            var next = job
            next.notBefore = now + policy.backoff(beforeAttempt: job.attempt + 1)
            if job.attempt >= policy.attempts {
                finishFailed(job, "\(why) (attempt \(job.attempt) of \(policy.attempts))")
            } else if next.notBefore >= job.created + policy.deadline {
                finishFailed(job, "\(why); no time left for a retry within \(policy.deadline) s")
            } else {
                RemoteStats.bump(stats.fetchRetries)
                logger.debug("chunk \(job.chunk): \(why); retry \(job.attempt + 1) in \(Int((next.notBefore - now) * 1000)) ms")
                delayed.append(next)
            }
        case .fail(let why):
            finishFailed(job, why)
        case .changed(let why):
            RemoteStats.bump(stats.fetchFailures)
            delegate?.fetchFailed(job, reason: why, objectChanged: true)
        }
    }

    private func finishFailed(_ job: FetchJob, _ why: String) {
        RemoteStats.bump(stats.fetchFailures)
        delegate?.fetchFailed(job, reason: why, objectChanged: false)
    }
}
