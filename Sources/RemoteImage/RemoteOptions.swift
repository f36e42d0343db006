import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc

/// The remote object's format: a raw disk image, a zstd seekable image
/// (compressed chunks fetched remotely, decompressed locally), or detected
/// from the object's first bytes.
public enum RemoteFormat: String, Sendable {
    case auto, raw, zstd
}

/// Everything `--backend http(s)://...` / `s3://...` and its options ask for,
/// validated. Defaults are what a production node wants: 1 MiB chunks, a
/// 256 MiB memory tier, a disk tier under /var/cache/vduse-blk, 4 pooled
/// connections, 30 s per request.
public struct RemoteOptions: Sendable, Equatable {
    public var url: String
    public var format: RemoteFormat = .auto
    /// Bytes per fetched chunk (a power of two, 64 KiB to 64 MiB).
    public var chunkSize: Int = 1 << 20
    /// Bytes of the in-memory LRU tier.
    public var memoryBytes: UInt64 = 256 << 20
    /// Bytes of decompressed chunks of a zstd image to keep in memory (0: no
    /// cache, frames are decompressed on the queue threads; nil: the image's
    /// size, up to an eighth of physical memory, at least 64 MiB).
    public var decompressedCacheBytes: UInt64?
    /// Directory of the disk tier (nil: no disk tier).
    public var cacheDirectory: String? = RemoteOptions.defaultCacheDirectory
    /// Bytes the disk tier's data file may hold (nil: as large as the object).
    /// Least recently used chunks are punched out past it.
    public var cacheSizeBytes: UInt64?
    /// Writes go here (nil: read-only device).
    public var overlayPath: String?
    /// Parallel keep-alive connections to the server.
    public var connections: Int = 4
    /// Fetcher threads the connections are spread over (receiving and copying bodies is CPU work).
    public var fetchThreads: Int = 2
    /// Chunks fetched ahead of a sequential reader (0: none).
    public var readaheadChunks: Int = 4
    /// Warm the whole image in the background at this many bytes/s (nil: off).
    public var prefetchBytesPerSecond: UInt64?
    /// Most chunks sequential readahead may reach ahead; the window doubles from
    /// `readaheadChunks` up to this while a reader stays sequential.
    public var readaheadMaxChunks: Int = 4
    /// Write the guest's chunk access order here when the daemon stops (nil: off).
    public var recordTracePath: String?
    /// Replay this recorded access order at start, ahead of the guest (nil: off).
    public var prefetchTracePath: String?
    /// Total time one fetch may take, retries included, before the guest gets IOERR.
    public var requestTimeoutSeconds: Double = 30
    /// Attempts per fetch (first try included).
    public var attempts: Int = 5
    /// Connect timeout per attempt.
    public var connectTimeoutSeconds: Double = 5
    /// An attempt that moves fewer than 1 KiB/s for this long is abandoned (stall).
    public var stallSeconds: Double = 10
    /// S3 only: path-style (`endpoint/bucket/key`) instead of virtual-host style.
    public var s3PathStyle: Bool?
    /// S3 only: endpoint and region overriding the environment.
    public var s3Endpoint: String?
    public var s3Region: String?
    /// Extra CA bundle for https (tests with a private CA).
    public var caFile: String?

    public static var defaultCacheDirectory: String {
        if let dir = getenv("VDUSE_BLK_CACHE_DIR") { return String(cString: dir) }
        return "/var/cache/vduse-blk"
    }

    public init(url: String) { self.url = url }

    public static let knownOptions = [
        "format=auto|raw|zstd", "chunk=SIZE", "memory=SIZE", "decompressed-cache=SIZE", "cache-dir=PATH|none",
        "cache-size=SIZE", "overlay=PATH", "connections=N", "fetch-threads=N", "readahead=CHUNKS",
        "readahead-max=CHUNKS", "prefetch=RATE", "record-trace=PATH", "prefetch-trace=PATH", "timeout=SECONDS", "attempts=N",
        "connect-timeout=SECONDS", "stall=SECONDS", "style=path|virtual", "endpoint=URL", "region=NAME", "cafile=PATH",
    ]

    /// Validates `url` and every `key=value` option (untrusted text).
    public static func parse(url: String, options: [String]) throws(BackendError) -> RemoteOptions {
        var o = RemoteOptions(url: url)
        var seen = Set<String>()
        for option in options {
            let scalars = option.unicodeScalars
            guard let eq = scalars.firstIndex(of: "=") else { throw .invalidSpec("remote option '\(option)' is not KEY=VALUE") }
            let key = String(scalars[..<eq])
            let value = String(scalars[scalars.index(after: eq)...])
            guard seen.insert(key).inserted else { throw .invalidSpec("remote option '\(key)' given twice") }
            try o.apply(key: key, value: value)
        }
        try o.checkCombination()
        return o
    }

    /// Checks what only the options together decide.
    func checkCombination() throws(BackendError) {
        if let size = cacheSizeBytes {
            guard cacheDirectory != nil else { throw .invalidSpec("cache-size needs a disk cache (cache-dir is none)") }
            guard size / UInt64(chunkSize) >= 4 else {
                throw .invalidSpec("cache-size must hold at least 4 chunks (\(humanBytes(4 * UInt64(chunkSize))) with chunk=\(humanBytes(UInt64(chunkSize))))")
            }
        }
    }

    mutating func apply(key: String, value: String) throws(BackendError) {
        switch key {
        case "format":
            guard let f = RemoteFormat(rawValue: value) else { throw .invalidSpec("format must be auto, raw or zstd") }
            format = f
        case "chunk":
            let size = try ByteSize.parse(value)
            guard size >= 64 << 10, size <= 64 << 20, size & (size - 1) == 0 else {
                throw .invalidSpec("chunk must be a power of two from 64K to 64M")
            }
            chunkSize = Int(size)
        case "memory":
            memoryBytes = try ByteSize.parse(value)
        case "decompressed-cache":
            let size = try ByteSize.parse(value)
            guard size <= 1 << 50 else { throw .invalidSpec("decompressed-cache must be at most 1P") }
            decompressedCacheBytes = size
        case "cache-dir":
            guard !value.isEmpty else { throw .invalidSpec("cache-dir needs a path (or none)") }
            cacheDirectory = value == "none" ? nil : value
        case "cache-size":
            cacheSizeBytes = try ByteSize.parse(value)
        case "overlay":
            guard !value.isEmpty else { throw .invalidSpec("overlay needs a path") }
            overlayPath = value
        case "connections":
            connections = try Self.integer(key, value, 1...64)
        case "fetch-threads":
            fetchThreads = try Self.integer(key, value, 1...16)
        case "readahead":
            readaheadChunks = try Self.integer(key, value, 0...64)
        case "readahead-max":
            readaheadMaxChunks = try Self.integer(key, value, 0...256)
        case "record-trace", "prefetch-trace":
            guard !value.isEmpty, !value.utf8.contains(0) else { throw .invalidSpec("\(key) needs a path") }
            if key == "record-trace" { recordTracePath = value } else { prefetchTracePath = value }
        case "prefetch":
            let rate = try ByteSize.parse(value)
            guard rate >= 4096 else { throw .invalidSpec("prefetch rate must be at least 4K (bytes per second)") }
            prefetchBytesPerSecond = rate
        case "timeout":
            requestTimeoutSeconds = try Self.seconds(key, value, 0.1...3600)
        case "attempts":
            attempts = try Self.integer(key, value, 1...100)
        case "connect-timeout":
            connectTimeoutSeconds = try Self.seconds(key, value, 0.05...600)
        case "stall":
            stallSeconds = try Self.seconds(key, value, 1...600)
        case "style":
            guard value == "path" || value == "virtual" else { throw .invalidSpec("style must be path or virtual") }
            s3PathStyle = value == "path"
        case "endpoint":
            s3Endpoint = value
        case "region":
            s3Region = value
        case "cafile":
            caFile = value
        default:
            throw .invalidSpec("unknown remote option '\(key)' (known: \(Self.knownOptions.joined(separator: ", ")))")
        }
    }

    static func integer(_ key: String, _ value: String, _ range: ClosedRange<Int>) throws(BackendError) -> Int {
        guard let n = Int(value), range.contains(n) else {
            throw .invalidSpec("\(key) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    static func seconds(_ key: String, _ value: String, _ range: ClosedRange<Double>) throws(BackendError) -> Double {
        guard let n = Double(value), n.isFinite, range.contains(n) else {
            throw .invalidSpec("\(key) must be seconds in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }
}
