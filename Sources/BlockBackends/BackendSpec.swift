/// A parsed `--backend` argument: `file:PATH` (more kinds to come). Untrusted
/// text: anything else is a clear error naming the known kinds.
public enum BackendSpec: Equatable, Sendable {
    case file(path: String)

    public static let knownKinds = ["file"]

    public static func parse(_ text: String) throws(BackendError) -> BackendSpec {
        guard let colon = text.firstIndex(of: ":") else {
            throw .invalidSpec("'\(text)': expected KIND:ARGS, e.g. file:/path/to/disk.img")
        }
        let kind = String(text[..<colon])
        let rest = String(text[text.index(after: colon)...])
        switch kind {
        case "file":
            guard !rest.isEmpty else { throw .invalidSpec("file: needs a path") }
            guard !rest.utf8.contains(0) else { throw .invalidSpec("path contains a NUL byte") }
            return .file(path: rest)
        default:
            throw .invalidSpec("unknown backend '\(kind)' (known: \(knownKinds.joined(separator: ", ")))")
        }
    }
}
