import CSys
import Glibc

/// The request kinds a queue counts (the `type` label of the metrics).
public enum RequestKind: Int, CaseIterable, Sendable {
    case read = 0, write, flush, discard, writeZeroes, getID
    /// Answered UNSUPP at once (an unknown request type).
    case unsupported
    /// Refused by the parser with IOERR at once (out of range, misaligned, a
    /// write to a read-only device, a malformed chain): no backend work.
    case refused

    /// The label value (`write_zeroes`, `get_id`, ...).
    public var label: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .flush: "flush"
        case .discard: "discard"
        case .writeZeroes: "write_zeroes"
        case .getID: "get_id"
        case .unsupported: "unsupported"
        case .refused: "refused"
        }
    }

    /// Kinds that reach the backend and so can fail there.
    public static let backendKinds: [RequestKind] = [.read, .write, .flush, .discard, .writeZeroes]
}

/// A consistent-enough copy of one queue's counters (each word read once;
/// words written by one batch may be seen half-way while that batch runs).
public struct QueueCountersSnapshot: Sendable, Equatable {
    /// Completed requests by `RequestKind.rawValue` (whatever their status).
    public var requests: [UInt64]
    /// Requests the backend failed (IOERR to the driver) by `RequestKind.rawValue`.
    public var failures: [UInt64]
    /// Bytes of reads and writes completed successfully.
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    /// Requests handed to the backend and not completed yet (as of the last batch).
    public var inFlight: UInt64
    /// Service-time histogram: `buckets[i]` counts requests whose service time
    /// was at most `QueueCounters.bucketBoundsNanos[i]` (and above the bound
    /// before it); the last entry counts the rest (non-cumulative).
    public var buckets: [UInt64]
    /// Sum of all service times (ns), and of those in the last (overflow) bucket.
    public var serviceNanos: UInt64
    public var overflowNanos: UInt64
    /// The last backend failure: its kind and result (a negative errno, or
    /// the byte count of a short transfer); nil if none yet.
    public var lastFailureKind: RequestKind?
    public var lastFailureResult: Int64
    /// True while the queue is stopped on a ring it cannot trust (NEEDS_RESET).
    public var broken: Bool

    public init(requests: [UInt64], failures: [UInt64], bytesRead: UInt64, bytesWritten: UInt64, inFlight: UInt64,
                buckets: [UInt64], serviceNanos: UInt64, overflowNanos: UInt64, lastFailureKind: RequestKind?,
                lastFailureResult: Int64, broken: Bool) {
        self.requests = requests
        self.failures = failures
        self.bytesRead = bytesRead
        self.bytesWritten = bytesWritten
        self.inFlight = inFlight
        self.buckets = buckets
        self.serviceNanos = serviceNanos
        self.overflowNanos = overflowNanos
        self.lastFailureKind = lastFailureKind
        self.lastFailureResult = lastFailureResult
        self.broken = broken
    }

    /// All zero (a queue that has not counted anything yet).
    public static let zero = QueueCountersSnapshot(
        requests: Array(repeating: 0, count: RequestKind.allCases.count),
        failures: Array(repeating: 0, count: RequestKind.allCases.count),
        bytesRead: 0, bytesWritten: 0, inFlight: 0,
        buckets: Array(repeating: 0, count: QueueCounters.bucketCount),
        serviceNanos: 0, overflowNanos: 0, lastFailureKind: nil, lastFailureResult: 0, broken: false)

    /// Completed requests of every kind.
    public var completed: UInt64 { requests.reduce(0, &+) }
    /// Requests the backend failed, every kind.
    public var failed: UInt64 { failures.reduce(0, &+) }
    /// Requests in the service-time histogram (equals `completed`).
    public var histogramCount: UInt64 { buckets.reduce(0, &+) }
}

/// One queue's request counters: owned and written by the queue thread only
/// (a single writer: plain reads of its own words, relaxed atomic stores, no
/// read-modify-write, no lock), read by the statistics side at any time with
/// atomic loads. Survives the queue's worker: a service hands the same
/// counters to every worker it starts, so the totals are the device's since
/// it was created. One allocation at creation, nothing per request.
///
/// Service time is measured from the batch that consumed a head to the batch
/// that completed it: one clock read per consumed batch and one per reaped
/// batch, shared by every request in it.
public final class QueueCounters: @unchecked Sendable {
    /// Upper bounds of the service-time buckets: 1 µs, 2 µs, ... 2^20 µs (~1.05 s); one more bucket holds the rest.
    public static let bucketBoundsNanos: [UInt64] = (0...20).map { 1000 << UInt64($0) }
    static let bucketCount = 22

    // Word layout.
    static let requestsBase = 0
    static let failuresBase = requestsBase + RequestKind.allCases.count
    static let bytesReadWord = failuresBase + RequestKind.allCases.count
    static let bytesWrittenWord = bytesReadWord + 1
    static let inFlightWord = bytesWrittenWord + 1
    static let serviceNanosWord = inFlightWord + 1
    static let overflowNanosWord = serviceNanosWord + 1
    /// Kind + 1 of the last failure (0: none).
    static let lastFailureKindWord = overflowNanosWord + 1
    static let lastFailureResultWord = lastFailureKindWord + 1
    static let brokenWord = lastFailureResultWord + 1
    static let bucketsBase = brokenWord + 1
    static let wordCount = bucketsBase + bucketCount

    /// The queue this counts (label `queue`).
    public let queueIndex: Int
    let words: UnsafeMutablePointer<UInt64>

    public init(queueIndex: Int) {
        self.queueIndex = queueIndex
        // Own cache lines: the queue thread's stores share them with no other queue.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: Self.wordCount * 8, alignment: 64)
        words = raw.bindMemory(to: UInt64.self, capacity: Self.wordCount)
        words.initialize(repeating: 0, count: Self.wordCount)
    }

    deinit { UnsafeMutableRawPointer(words).deallocate() }

    // MARK: - the writer (queue thread only)

    @inline(__always)
    func add(_ word: Int, _ n: UInt64) {
        let p = words + word
        vb_store_relaxed_u64(p, p.pointee &+ n)
    }

    @inline(__always)
    func set(_ word: Int, _ v: UInt64) { vb_store_relaxed_u64(words + word, v) }

    /// Counts one completed request of `kind` that took `nanos` of service time.
    @inline(__always)
    func recordCompletion(_ kind: RequestKind, nanos: UInt64) {
        add(Self.requestsBase + kind.rawValue, 1)
        add(Self.serviceNanosWord, nanos)
        // Bucket i holds (1000 * 2^(i-1), 1000 * 2^i] ns; bucket 0 everything up to 1 µs.
        let q = nanos == 0 ? 0 : (nanos &- 1) / 1000
        var i = q == 0 ? 0 : 64 - q.leadingZeroBitCount
        if i >= Self.bucketCount - 1 {
            i = Self.bucketCount - 1
            add(Self.overflowNanosWord, nanos)
        }
        add(Self.bucketsBase + i, 1)
    }

    @inline(__always)
    func recordBytes(read: UInt64, written: UInt64) {
        if read > 0 { add(Self.bytesReadWord, read) }
        if written > 0 { add(Self.bytesWrittenWord, written) }
    }

    /// A request of `kind` the backend failed with `result` (negative errno or a short count).
    func recordFailure(_ kind: RequestKind, result: Int64) {
        add(Self.failuresBase + kind.rawValue, 1)
        set(Self.lastFailureResultWord, UInt64(bitPattern: result))
        set(Self.lastFailureKindWord, UInt64(kind.rawValue + 1))
    }

    @inline(__always)
    func setInFlight(_ n: Int) { set(Self.inFlightWord, UInt64(n)) }

    func setBroken(_ broken: Bool) { vb_store_release_u64(words + Self.brokenWord, broken ? 1 : 0) }

    // MARK: - readers (any thread)

    @inline(__always)
    func load(_ word: Int) -> UInt64 { vb_load_acquire_u64(words + word) }

    /// Completed requests of every kind (one pass over a few words).
    public var completed: UInt64 {
        var n: UInt64 = 0
        for k in 0..<RequestKind.allCases.count { n &+= load(Self.requestsBase + k) }
        return n
    }

    /// True while the queue's current worker stopped on a ring it cannot trust.
    public var broken: Bool { load(Self.brokenWord) != 0 }

    public func snapshot() -> QueueCountersSnapshot {
        let kinds = RequestKind.allCases.count
        let lastKind = load(Self.lastFailureKindWord)
        return QueueCountersSnapshot(
            requests: (0..<kinds).map { load(Self.requestsBase + $0) },
            failures: (0..<kinds).map { load(Self.failuresBase + $0) },
            bytesRead: load(Self.bytesReadWord), bytesWritten: load(Self.bytesWrittenWord),
            inFlight: load(Self.inFlightWord),
            buckets: (0..<Self.bucketCount).map { load(Self.bucketsBase + $0) },
            serviceNanos: load(Self.serviceNanosWord), overflowNanos: load(Self.overflowNanosWord),
            lastFailureKind: lastKind == 0 ? nil : RequestKind(rawValue: Int(lastKind) - 1),
            lastFailureResult: Int64(bitPattern: load(Self.lastFailureResultWord)),
            broken: load(Self.brokenWord) != 0)
    }
}

extension QueueCounters {
    /// The monotonic clock in nanoseconds (the batches' service-time clock).
    @inline(__always)
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
