import BlockBackends
import SystemSupport

/// The arguments of `zstd:IMAGE[,overlay=PATH][,cache=SIZE]`: a zstd seekable
/// image, read-only unless an overlay file takes the writes (paths may not
/// contain commas), and the size of the decompressed-chunk cache.
public struct ZstdBackendSpec: Equatable, Sendable {
    public var image: String
    public var overlay: String?
    public var cacheBytes: UInt64?

    public init(image: String, overlay: String? = nil, cacheBytes: UInt64? = nil) {
        self.image = image
        self.overlay = overlay
        self.cacheBytes = cacheBytes
    }

    /// Parses the text after `zstd:` (untrusted).
    public static func parse(_ arguments: String) throws(BackendError) -> ZstdBackendSpec {
        guard !arguments.utf8.contains(0) else { throw .invalidSpec("path contains a NUL byte") }
        let (image, options) = BackendSpec.splitOptions(arguments)
        guard !image.isEmpty else {
            throw .invalidSpec("zstd: needs an image path, e.g. zstd:/path/disk.zst,overlay=/path/disk.overlay")
        }
        var spec = ZstdBackendSpec(image: image)
        for option in options {
            if let path = BackendSpec.value(of: option, key: "overlay"), spec.overlay == nil {
                guard !path.isEmpty else { throw .invalidSpec("zstd: overlay= needs a path") }
                spec.overlay = path
            } else if let size = BackendSpec.value(of: option, key: "cache"), spec.cacheBytes == nil {
                spec.cacheBytes = try ByteSize.parse(size)
            } else {
                throw .invalidSpec("zstd: unknown or repeated option '\(option)' (known: overlay=PATH, cache=SIZE)")
            }
        }
        return spec
    }

    /// The spec as the user would write it (without the `zstd:` kind).
    public var arguments: String {
        var s = image
        if let overlay { s += ",overlay=\(overlay)" }
        if let cacheBytes { s += ",cache=\(cacheBytes)" }
        return s
    }
}

/// Opens `zstd:` specs.
public struct ZstdBackendProvider: BackendProvider {
    public init() {}

    public var kinds: [String] { ["zstd"] }

    /// The image and, when given, the overlay.
    public func identity(of spec: BackendSpec) throws(BackendError) -> BackendIdentity {
        let parsed = try ZstdBackendSpec.parse(spec.arguments)
        var sources = [BackendIdentity.file(role: "image", path: parsed.image)]
        if let overlay = parsed.overlay { sources.append(BackendIdentity.file(role: "overlay", path: overlay)) }
        return BackendIdentity(kind: spec.kind, sources: sources)
    }

    public func open(_ spec: BackendSpec, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory {
        let parsed = try ZstdBackendSpec.parse(spec.arguments)
        if options.size != nil { throw .invalidSpec("--size does not apply to zstd images") }
        return try ZstdBackendFactory.open(parsed)
    }
}
