import BlockBackends

/// The arguments of a remote spec: `http://HOST/PATH[,OPTION...]`,
/// `https://...` or `s3://BUCKET/KEY[,OPTION...]` (`http:URL` is accepted
/// too): the URL and its `key=value` options, unparsed (`RemoteOptions`
/// validates them). A comma inside the URL must be written %2C.
public struct RemoteBackendSpec: Equatable, Sendable {
    public var url: String
    public var options: [String]

    public init(url: String, options: [String] = []) {
        self.url = url
        self.options = options
    }

    /// Parses the arguments of a spec of `kind` http, https or s3 (untrusted).
    public static func parse(kind: String, _ arguments: String) throws(BackendError) -> RemoteBackendSpec {
        guard !arguments.utf8.contains(0) else { throw .invalidSpec("URL contains a NUL byte") }
        var (url, options) = BackendSpec.splitOptions(arguments)
        if url.hasPrefix("//") {
            url = kind + ":" + url
        } else if kind != "s3", url.hasPrefix("http://") || url.hasPrefix("https://") {
            // `http:URL`: the URL follows the kind.
        } else {
            throw .invalidSpec("\(kind): expected \(kind)://HOST/PATH, got '\(kind):\(url)'")
        }
        for option in options where !option.unicodeScalars.contains("=") {
            throw .invalidSpec("\(kind): option '\(option)' is not KEY=VALUE")
        }
        return RemoteBackendSpec(url: url, options: options)
    }

    /// The spec as the user would write it.
    public var text: String { ([url] + options).joined(separator: ",") }
}

/// Opens `http://`, `https://` and `s3://` specs.
public struct RemoteBackendProvider: BackendProvider {
    public init() {}

    public var kinds: [String] { ["http", "https", "s3"] }

    /// The URL and, when given, the overlay (caches and tuning options do not change the data).
    public func identity(of spec: BackendSpec) throws(BackendError) -> BackendIdentity {
        let parsed = try RemoteBackendSpec.parse(kind: spec.kind, spec.arguments)
        var sources = [BackendIdentity.Source(role: "url", location: parsed.url)]
        if let overlay = parsed.options.compactMap({ BackendSpec.value(of: $0, key: "overlay") }).last {
            sources.append(BackendIdentity.file(role: "overlay", path: overlay))
        }
        return BackendIdentity(kind: "remote", sources: sources)  // the URL carries the scheme
    }

    public func open(_ spec: BackendSpec, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory {
        var parsed = try RemoteBackendSpec.parse(kind: spec.kind, spec.arguments)
        if options.size != nil { throw .invalidSpec("--size does not apply to remote images") }
        if let rate = options.prefetchRate, !parsed.options.contains(where: { $0.hasPrefix("prefetch=") }) {
            parsed.options.append("prefetch=\(rate)")
        }
        for (key, path) in [("record-trace", options.recordTrace), ("prefetch-trace", options.prefetchTrace)] {
            guard let path else { continue }
            guard !parsed.options.contains(where: { $0.hasPrefix(key + "=") }) else {
                throw .invalidSpec("--\(key) and the \(key)= option are both given")
            }
            parsed.options.append("\(key)=\(path)")
        }
        return try RemoteBackendFactory.open(parsed, logger: options.logger)
    }
}
