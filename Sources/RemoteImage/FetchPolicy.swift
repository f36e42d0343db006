import ImageOverlay
import SystemSupport
import Glibc

/// Timeouts, retry limits and backoff of range fetches (from `RemoteOptions`).
struct FetchPolicy: Sendable {
    var attempts: Int
    /// Total seconds a fetch may take, retries included.
    var deadline: Double
    var connectTimeout: Double
    var stall: Double
    var caFile: String?
    var backoffBase = 0.1
    var backoffCap = 5.0

    init(_ o: RemoteOptions) {
        attempts = o.attempts
        deadline = o.requestTimeoutSeconds
        connectTimeout = o.connectTimeoutSeconds
        stall = o.stallSeconds
        caFile = o.caFile
    }

    /// Delay before attempt `attempt` (2, 3, ...): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so retries of many chunks spread out.
    func backoff(beforeAttempt attempt: Int) -> Double {
        let exp = min(backoffCap, backoffBase * Double(1 << min(20, max(0, attempt - 2))))
        return exp / 2 + Double.random(in: 0...(exp / 2))
    }
}

/// How one finished attempt is judged.
@_spi(Fuzzing) public enum AttemptOutcome: Equatable {
    case success
    /// Worth another attempt (5xx, 408, 429, transport errors, bad or short bodies).
    case retry(String)
    /// Will not get better by retrying (404, 403, a server ignoring ranges...).
    case fail(String)
    /// The object is no longer the one opened (412 on If-Match, new ETag): fail everything.
    case changed(String)
}

/// Checks an attempt's result against what was asked: status, Content-Range,
/// body length and the object's validators. Pure: tested and fuzzed directly.
@_spi(Fuzzing) public struct ResponseCheck {
    var first: UInt64
    var length: Int
    var objectSize: UInt64
    var etag: String?
    var lastModified: String?

    /// The memberwise initializer, spelled out so fuzz-remote can reach it.
    @_spi(Fuzzing) public init(first: UInt64, length: Int, objectSize: UInt64, etag: String? = nil,
                               lastModified: String? = nil) {
        self.first = first
        self.length = length
        self.objectSize = objectSize
        self.etag = etag
        self.lastModified = lastModified
    }

    @_spi(Fuzzing) public func judge(transportError: String?, head: HTTPResponseHead, received: Int, overflow: Bool) -> AttemptOutcome {
        if overflow { return .retry("body longer than the \(length) bytes asked for") }
        if let transportError { return .retry(transportError) }
        switch head.status {
        case 206:
            guard let cr = head.contentRange else {
                return .retry(head.contentRangeMalformed ? "malformed Content-Range" : "206 without Content-Range")
            }
            guard cr.first == first, cr.length == UInt64(length) else {
                return .retry("wrong Content-Range bytes \(cr.first)-\(cr.last) for \(first)-\(first + UInt64(length) - 1)")
            }
            if let total = cr.total, total != objectSize {
                return .changed("object size is now \(total) bytes, was \(objectSize)")
            }
        case 200:
            guard first == 0, UInt64(length) == objectSize else {
                return .fail("server ignored the Range header (200 OK)")
            }
        case 412:
            return .changed("If-Match failed (412): the ETag changed")
        case 404, 410:
            return .fail("object gone (HTTP \(head.status))")
        case 401, 403:
            return .fail("access denied (HTTP \(head.status))")
        case 408, 429, 500...599:
            return .retry("HTTP \(head.status)")
        case 0:
            return .retry("no HTTP status line")
        default:
            return .fail("unexpected HTTP status \(head.status)")
        }
        if let etag, let now = head.etag, now != etag { return .changed("ETag changed from \(etag) to \(now)") }
        if let lastModified, let now = head.lastModified, now != lastModified {
            return .changed("Last-Modified changed from \(lastModified) to \(now)")
        }
        if received != length { return .retry("short body: \(received) of \(length) bytes") }
        return .success
    }
}
