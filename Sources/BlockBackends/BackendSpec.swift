/// A `--backend` argument split into its kind and the kind's own arguments:
/// `file:PATH` is kind "file", arguments "PATH"; `zstd:IMAGE,overlay=O` is
/// kind "zstd"; `https://HOST/PATH,...` is kind "https" with arguments
/// "//HOST/PATH,...". Untrusted text: only the split is checked here; each
/// `BackendProvider` parses (and validates) the arguments of its kinds.
public struct BackendSpec: Equatable, Sendable {
    public var kind: String
    public var arguments: String

    public init(kind: String, arguments: String) {
        self.kind = kind
        self.arguments = arguments
    }

    public static func parse(_ text: String) throws(BackendError) -> BackendSpec {
        // Split on Unicode scalars, not Characters: a path may begin with a
        // combining mark, which would otherwise fuse with the ':' (or ',' / '=').
        let scalars = text.unicodeScalars
        guard let colon = scalars.firstIndex(of: ":"), colon != scalars.startIndex else {
            throw .invalidSpec("'\(text)': expected KIND:ARGS, e.g. file:/path/to/disk.img")
        }
        let arguments = String(scalars[scalars.index(after: colon)...])
        guard !arguments.utf8.contains(0) else { throw .invalidSpec("'\(text)' contains a NUL byte") }
        return BackendSpec(kind: String(scalars[..<colon]), arguments: arguments)
    }

    /// The spec as the user would write it.
    public var text: String { "\(kind):\(arguments)" }
}

extension BackendSpec {
    /// Splits `KIND-ARGS,OPTION,...` on commas (scalars, so a combining mark
    /// after a comma does not hide it): the first piece and the options.
    public static func splitOptions(_ arguments: String) -> (String, [String]) {
        let parts = arguments.unicodeScalars.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        return (parts[0], Array(parts.dropFirst()))
    }

    /// The value of `option` if it is `key=VALUE` (scalar-wise), else nil.
    public static func value(of option: String, key: String) -> String? {
        let prefix = (key + "=").unicodeScalars
        guard option.unicodeScalars.starts(with: prefix) else { return nil }
        return String(option.unicodeScalars.dropFirst(prefix.count))
    }
}
