import Logging

/// What opening a backend needs besides its spec: the options of `create`
/// that apply to backends, and where to log what is worth knowing.
public struct BackendOpenOptions: Sendable {
    /// Bytes to expose; backends that cannot be sized refuse it.
    public var size: UInt64?
    /// Open read-only.
    public var readOnly: Bool
    /// File backends: O_DIRECT.
    public var direct: Bool
    /// File backends: how queues move data.
    public var engine: FileEngine
    /// Remote images: warm the whole image in the background at this rate
    /// (a size per second, e.g. "64M"); nil: no background warm-up.
    public var prefetchRate: String?
    /// Remote images: record the guest's chunk access order to this file (`--record-trace`).
    public var recordTrace: String?
    /// Remote images: replay a recorded access order at start (`--prefetch-trace`).
    public var prefetchTrace: String?
    public var logger: Logger

    public init(size: UInt64? = nil, readOnly: Bool = false, direct: Bool = false, engine: FileEngine = .uring,
                prefetchRate: String? = nil, recordTrace: String? = nil, prefetchTrace: String? = nil,
                logger: Logger = Logger(label: "vduse-blk")) {
        self.size = size
        self.readOnly = readOnly
        self.direct = direct
        self.engine = engine
        self.prefetchRate = prefetchRate
        self.recordTrace = recordTrace
        self.prefetchTrace = prefetchTrace
        self.logger = logger
    }
}

/// One kind of backend (file, zstd, remote, or one written elsewhere):
/// parses the arguments of its spec kinds and opens the backend.
public protocol BackendProvider: Sendable {
    /// The spec kinds (the text before the first ':') this provider opens.
    var kinds: [String] { get }
    /// Opens the backend `spec` describes (`spec.kind` is one of `kinds`).
    func open(_ spec: BackendSpec, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory
    /// What data `spec` names (files by resolved path, device and inode),
    /// found without opening or creating anything. Default: the spec text.
    func identity(of spec: BackendSpec) throws(BackendError) -> BackendIdentity
}

extension BackendProvider {
    public func identity(of spec: BackendSpec) throws(BackendError) -> BackendIdentity { BackendIdentity(spec: spec) }
}

/// The one entry point that opens any backend from a `--backend` spec: it
/// finds the provider of the spec's kind and lets it open the backend.
/// Callers then see only `BlockBackendFactory` (geometry, per-queue handles,
/// statistics, shutdown), never a concrete backend type.
public struct BackendCatalog: Sendable {
    public let providers: [any BackendProvider]

    public init(_ providers: [any BackendProvider]) {
        self.providers = providers
    }

    /// Every kind some provider opens, in provider order.
    public var kinds: [String] { providers.flatMap(\.kinds) }

    /// The provider for `kind`, if any.
    public func provider(for kind: String) -> (any BackendProvider)? {
        providers.first { $0.kinds.contains(kind) }
    }

    /// Parses `text` and opens the backend it names.
    public func open(_ text: String, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory {
        let spec = try BackendSpec.parse(text)
        guard let provider = provider(for: spec.kind) else {
            throw .invalidSpec("unknown backend '\(spec.kind)' (known: \(kinds.joined(separator: ", ")))")
        }
        return try provider.open(spec, options: options)
    }

    /// What data the backend `text` names (see `BackendIdentity`); opens nothing.
    public func identity(of text: String) throws(BackendError) -> BackendIdentity {
        let spec = try BackendSpec.parse(text)
        guard let provider = provider(for: spec.kind) else {
            throw .invalidSpec("unknown backend '\(spec.kind)' (known: \(kinds.joined(separator: ", ")))")
        }
        return try provider.identity(of: spec)
    }
}
