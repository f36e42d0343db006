import ImageOverlay
import SystemSupport
import Glibc

/// Typed errors of the remote backend, raised while opening (data-path
/// failures are negated errnos handed to the guest as IOERR).
public enum RemoteError: Error, Equatable, CustomStringConvertible {
    case invalidURL(String)
    case notFound(url: String)
    case accessDenied(url: String, status: Int)
    case unexpectedStatus(url: String, status: Int)
    case rangesUnsupported(url: String)
    case transport(url: String, reason: String)
    case badResponse(url: String, reason: String)
    case objectChanged(url: String, reason: String)
    /// A system call failed.
    case system(SyscallError)
    case cache(String)
    case image(String)
    /// An access trace file (`record-trace=`, `prefetch-trace=`) is unusable.
    case trace(String)

    public var description: String {
        switch self {
        case .invalidURL(let s): return "invalid remote URL: \(s)"
        case .notFound(let u): return "remote object not found (HTTP 404): \(u)"
        case .accessDenied(let u, let s):
            return "access denied (HTTP \(s)) for \(u): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN and the bucket policy"
        case .unexpectedStatus(let u, let s): return "unexpected HTTP status \(s) from \(u)"
        case .rangesUnsupported(let u): return "\(u): the server does not answer Range requests with 206 Partial Content"
        case .transport(let u, let r): return "cannot fetch \(u): \(r)"
        case .badResponse(let u, let r): return "bad response from \(u): \(r)"
        case .objectChanged(let u, let r): return "remote object \(u) changed while in use: \(r)"
        case .system(let s): return s.message
        case .cache(let s): return "disk cache: \(s)"
        case .image(let s): return s
        case .trace(let s): return "access trace: \(s)"
        }
    }
}

extension RemoteError {
    /// A failed system call named `what`, by its errno.
    public static func system(what: String, errno: Int32) -> RemoteError { .system(SyscallError(call: what, errno: errno)) }
}
