import SystemSupport

/// A parsed `--backend` argument: `file:PATH`, `zstd:IMAGE,...` or a remote
/// object (`http://`, `https://`, `s3://`). Untrusted text: anything else is
/// a clear error naming the known kinds.
public enum BackendSpec: Equatable, Sendable {
    case file(path: String)
    /// `zstd:IMAGE[,overlay=PATH][,cache=SIZE]`: a zstd seekable image, read-only
    /// unless an overlay file takes the writes (paths may not contain commas).
    case zstd(image: String, overlay: String?, cacheBytes: UInt64?)
    /// `http://HOST/PATH[,OPTION...]`, `https://...` or `s3://BUCKET/KEY[,OPTION...]`
    /// (`http:URL` is accepted too): the URL and its `key=value` options, unparsed
    /// (the remote backend validates them). A comma inside the URL must be written %2C.
    case remote(url: String, options: [String])

    public static let knownKinds = ["file", "zstd", "http", "https", "s3"]

    public static func parse(_ text: String) throws(BackendError) -> BackendSpec {
        // Split on Unicode scalars, not Characters: a path may begin with a
        // combining mark, which would otherwise fuse with the ':' (or ',' / '=').
        let scalars = text.unicodeScalars
        guard let colon = scalars.firstIndex(of: ":") else {
            throw .invalidSpec("'\(text)': expected KIND:ARGS, e.g. file:/path/to/disk.img")
        }
        let kind = String(scalars[..<colon])
        let rest = String(scalars[scalars.index(after: colon)...])
        switch kind {
        case "file":
            guard !rest.isEmpty else { throw .invalidSpec("file: needs a path") }
            guard !rest.utf8.contains(0) else { throw .invalidSpec("path contains a NUL byte") }
            return .file(path: rest)
        case "zstd":
            return try parseZstd(rest)
        case "http", "https", "s3":
            return try parseRemote(kind: kind, rest)
        default:
            throw .invalidSpec("unknown backend '\(kind)' (known: \(knownKinds.joined(separator: ", ")))")
        }
    }
}

extension BackendSpec {
    static func parseZstd(_ rest: String) throws(BackendError) -> BackendSpec {
        guard !rest.utf8.contains(0) else { throw .invalidSpec("path contains a NUL byte") }
        let parts = rest.unicodeScalars.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let image = parts.first, !image.isEmpty else {
            throw .invalidSpec("zstd: needs an image path, e.g. zstd:/path/disk.zst,overlay=/path/disk.overlay")
        }
        var overlay: String?
        var cache: UInt64?
        for option in parts.dropFirst() {
            if option.unicodeScalars.starts(with: "overlay=".unicodeScalars), overlay == nil {
                let path = String(option.unicodeScalars.dropFirst("overlay=".unicodeScalars.count))
                guard !path.isEmpty else { throw .invalidSpec("zstd: overlay= needs a path") }
                overlay = path
            } else if option.unicodeScalars.starts(with: "cache=".unicodeScalars), cache == nil {
                cache = try ByteSize.parse(String(option.unicodeScalars.dropFirst("cache=".unicodeScalars.count)))
            } else {
                throw .invalidSpec("zstd: unknown or repeated option '\(option)' (known: overlay=PATH, cache=SIZE)")
            }
        }
        return .zstd(image: image, overlay: overlay, cacheBytes: cache)
    }
}

extension BackendSpec {
    static func parseRemote(kind: String, _ rest: String) throws(BackendError) -> BackendSpec {
        guard !rest.utf8.contains(0) else { throw .invalidSpec("URL contains a NUL byte") }
        let parts = rest.unicodeScalars.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var url = parts[0]
        if url.hasPrefix("//") {
            url = kind + ":" + url
        } else if kind != "s3", url.hasPrefix("http://") || url.hasPrefix("https://") {
            // `http:URL`: the URL follows the kind.
        } else {
            throw .invalidSpec("\(kind): expected \(kind)://HOST/PATH, got '\(kind):\(url)'")
        }
        let options = Array(parts.dropFirst())
        for option in options where !option.unicodeScalars.contains("=") {
            throw .invalidSpec("\(kind): option '\(option)' is not KEY=VALUE")
        }
        return .remote(url: url, options: options)
    }
}
