/// Opens `file:PATH`: a raw image file or a block device, with the engine,
/// O_DIRECT and size of the open options.
public struct FileBackendProvider: BackendProvider {
    public init() {}

    public var kinds: [String] { ["file"] }

    /// The image path of a `file:` spec's arguments.
    public static func path(of arguments: String) throws(BackendError) -> String {
        guard !arguments.isEmpty else { throw .invalidSpec("file: needs a path") }
        guard !arguments.utf8.contains(0) else { throw .invalidSpec("path contains a NUL byte") }
        return arguments
    }

    public func identity(of spec: BackendSpec) throws(BackendError) -> BackendIdentity {
        BackendIdentity(kind: spec.kind, sources: [BackendIdentity.file(role: "image", path: try Self.path(of: spec.arguments))])
    }

    public func open(_ spec: BackendSpec, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory {
        try FileBackendFactory(path: Self.path(of: spec.arguments), size: options.size, readOnly: options.readOnly,
                               direct: options.direct, engine: options.engine)
    }
}
