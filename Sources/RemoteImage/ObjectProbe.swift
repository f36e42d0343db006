import ImageOverlay
import SystemSupport
import CRemote
import Glibc
import ZstdImage
import Logging

/// What the server says about the object before the device is made: its
/// size and validators. Learned from a one-byte range request (works on
/// S3, nginx and anything else that honours Range, and proves it does).
struct ObjectInfo: Sendable, Equatable {
    var size: UInt64
    var etag: String?
    var lastModified: String?

    /// What the disk cache and the overlay pin: the object as it was opened.
    var validator: String { "\(size);\(etag ?? "");\(lastModified ?? "")" }
}

enum ObjectProbe {
    /// Probes `endpoint` on this thread, retrying transient failures with the
    /// policy's backoff; a missing object or denied credentials fail at once.
    static func probe(_ endpoint: RemoteEndpoint, policy: FetchPolicy, logger: Logger) throws(RemoteError) -> ObjectInfo {
        let transfer = try CurlTransfer(capacity: 1)
        let started = monotonicSeconds()
        var attempt = 0
        while true {
            attempt += 1
            let remaining = started + policy.deadline - monotonicSeconds()
            transfer.prepare(url: endpoint.url, headers: endpoint.headers(range: (0, 0), ifMatch: nil), length: 1,
                             policy: policy, remaining: max(0.001, remaining))
            let code = transfer.performBlocking()
            let head = transfer.head
            var why: String
            if code != CURLE_OK {
                why = transfer.errorText(code)
            } else {
                switch head.status {
                case 206:
                    guard let cr = head.contentRange, cr.first == 0, cr.last == 0, let total = cr.total, total > 0 else {
                        throw .badResponse(url: endpoint.displayName, reason: "206 without a usable Content-Range (need bytes 0-0/SIZE)")
                    }
                    return ObjectInfo(size: total, etag: head.etag, lastModified: head.lastModified)
                case 200:
                    throw .rangesUnsupported(url: endpoint.displayName)
                case 416:
                    throw .badResponse(url: endpoint.displayName, reason: "the object is empty")
                case 404, 410:
                    throw .notFound(url: endpoint.displayName)
                case 401, 403:
                    throw .accessDenied(url: endpoint.displayName, status: head.status)
                case 408, 429, 500...599:
                    why = "HTTP \(head.status)"
                default:
                    throw .unexpectedStatus(url: endpoint.displayName, status: head.status)
                }
            }
            let delay = policy.backoff(beforeAttempt: attempt + 1)
            if attempt >= policy.attempts || monotonicSeconds() + delay >= started + policy.deadline {
                throw .transport(url: endpoint.displayName, reason: "\(why) (after \(attempt) attempts)")
            }
            // Debug, not warning: a failed create ends in one error line that counts the attempts.
            logger.debug("\(endpoint.displayName): \(why); retrying in \(Int(delay * 1000)) ms")
            usleep(UInt32(delay * 1e6))
        }
    }
}
