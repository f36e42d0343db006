import Glibc

/// The one error type of opening and configuring a backend (never the data
/// path: data-path failures are negated errnos in `IOCompletion.result`).
/// Carries what kind of failure it is, the context in the user's terms, the
/// errno beneath when a system call failed, and the typed error beneath when
/// a backend's own layer failed (an image or remote error), so nothing is
/// flattened to a string before the CLI prints it.
public struct BackendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, for callers that react to it (and tests).
    public enum Kind: String, Sendable {
        /// The spec or an option is malformed or names something unknown.
        case invalidSpec
        /// The image (or a file it needs) cannot be opened.
        case cannotOpen
        /// A size would shrink an existing image.
        case wouldShrink
        /// A size is malformed, zero, misaligned or too small.
        case badSize
        /// The I/O engine cannot be used on this kernel or in this sandbox.
        case engineUnavailable
        /// A system call failed while setting up.
        case io
        /// The image is damaged, unsupported or does not match its overlay.
        case image
        /// The remote object cannot be reached or used.
        case remote
        /// Another process holds what the backend needs.
        case busy
        /// The backend cannot do what was asked (e.g. resize a compressed image).
        case unsupported
    }

    public var kind: Kind
    /// What was being done, or what is wrong, in the user's terms.
    public var context: String
    /// The errno beneath, when a system call failed.
    public var errno: Int32?
    /// The typed error beneath (e.g. an `ImageError`), kept whole.
    public var source: (any Error & Sendable)?

    public init(kind: Kind, context: String, errno: Int32? = nil, source: (any Error & Sendable)? = nil) {
        self.kind = kind
        self.context = context
        self.errno = errno
        self.source = source
    }

    public var description: String {
        if let errno { return "\(context): \(String(cString: strerror(errno)))" }
        if let source { return "\(context): \(source)" }
        return context
    }

    /// Same kind, context and errno (the source is not compared).
    public static func == (a: BackendError, b: BackendError) -> Bool {
        a.kind == b.kind && a.context == b.context && a.errno == b.errno
    }

    // The common cases, by name.
    public static func invalidSpec(_ what: String) -> BackendError {
        BackendError(kind: .invalidSpec, context: "invalid backend: \(what)")
    }
    public static func cannotOpen(path: String, errno: Int32) -> BackendError {
        BackendError(kind: .cannotOpen, context: "cannot open image \(path)", errno: errno)
    }
    public static func wouldShrink(path: String, current: UInt64, requested: UInt64) -> BackendError {
        BackendError(kind: .wouldShrink, context: "refusing to shrink \(path) from \(current) to \(requested) bytes")
    }
    public static func badSize(_ what: String) -> BackendError {
        BackendError(kind: .badSize, context: "bad size: \(what)")
    }
    public static func engineUnavailable(engine: String, errno: Int32) -> BackendError {
        BackendError(kind: .engineUnavailable, context: "I/O engine \(engine) unavailable", errno: errno)
    }
    public static func io(what: String, errno: Int32) -> BackendError {
        BackendError(kind: .io, context: what, errno: errno)
    }
}
