import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc

/// What `--backend zstd:IMAGE[,overlay=PATH][,cache=SIZE]` asks for.
public struct ZstdBackendOptions: Sendable, Equatable {
    /// The zstd seekable image (the read-only base).
    public var imagePath: String
    /// The overlay taking writes; nil serves the image read-only.
    public var overlayPath: String?
    /// Bytes of decompressed chunks to cache (0: no shared cache, chunks are
    /// decompressed inline; nil: `defaultCacheBytes(logicalSize:)`).
    public var cacheBytes: UInt64?
    /// Decompress the next chunks in the background on sequential reads.
    public var readahead: Bool
    /// Decompression worker threads (nil: `DecompressionPool.defaultThreads`;
    /// 0: decompress on the queue threads).
    public var decodeThreads: Int?

    /// The smallest default cache.
    public static let minimumDefaultCacheBytes: UInt64 = 64 << 20

    /// The default decompressed-chunk cache for an image of `logicalSize`
    /// bytes: the whole image if it fits in an eighth of the physical memory
    /// (at least 64 MiB), so warm reads never decompress again.
    public static func defaultCacheBytes(logicalSize: UInt64) -> UInt64 {
        let pages = UInt64(max(0, sysconf(Int32(_SC_PHYS_PAGES))))
        let pageSize = UInt64(max(0, sysconf(Int32(_SC_PAGESIZE))))
        let budget = max(minimumDefaultCacheBytes, pages.multipliedReportingOverflow(by: pageSize).partialValue / 8)
        return min(logicalSize, budget)
    }

    public init(imagePath: String, overlayPath: String? = nil, cacheBytes: UInt64? = nil,
                readahead: Bool = true, decodeThreads: Int? = nil) {
        self.imagePath = imagePath
        self.overlayPath = overlayPath
        self.cacheBytes = cacheBytes
        self.readahead = readahead
        self.decodeThreads = decodeThreads
    }
}

/// A backend over a zstd seekable image, read-only on its own or writable
/// through an overlay file. Owns (shares with its queue handles) the opened
/// image, the overlay and the chunk cache; every queue gets its own decoder.
public struct ZstdBackendFactory: BlockBackendFactory {
    public let options: ZstdBackendOptions
    public let image: SeekableImage
    public let geometry: BackendGeometry
    /// The shared chunk cache (nil when `cacheBytes` is below one chunk).
    public let cache: ChunkCache?
    let overlay: Overlay?
    /// Decodes cache misses off the queue threads (nil: inline decoding).
    public let pool: DecompressionPool?

    public var summary: String {
        var parts = ["zstd:\(options.imagePath)"]
        if let o = options.overlayPath { parts.append("overlay \(o)") } else { parts.append("ro") }
        parts.append("cache \(humanBytes(UInt64(cache?.capacityChunks ?? 0) * UInt64(image.chunkSize)))")
        return parts.joined(separator: ", ")
    }

    /// A warning worth logging: the overlay's newest map slot was damaged and an
    /// older one is in use (nil normally).
    public var recoveryNote: String? { overlay?.recoveryNote }

    /// Opens (and validates) the image, opens or creates the overlay.
    public init(options: ZstdBackendOptions) throws(ImageError) {
        self.options = options
        let image = try SeekableImage.open(path: options.imagePath)
        self.image = image
        guard image.logicalSize % 512 == 0 else {
            throw .unsupported("\(options.imagePath) holds \(image.logicalSize) bytes, not a whole number of 512-byte sectors")
        }
        if let path = options.overlayPath {
            overlay = try Overlay.open(path: path, image: image)
        } else {
            overlay = nil
        }
        let cacheBytes = options.cacheBytes ?? ZstdBackendOptions.defaultCacheBytes(logicalSize: image.logicalSize)
        let cache = ChunkCache(capacityBytes: cacheBytes, chunkSize: image.chunkSize)
        self.cache = cache
        let threads = options.decodeThreads ?? DecompressionPool.defaultThreads
        if threads > 0, let cache, cache.capacityChunks >= DecompressionPool.minimumCacheChunks {
            pool = try DecompressionPool(image: image, cache: cache, threads: threads)
        } else {
            pool = nil
        }
        let writable = overlay != nil
        geometry = BackendGeometry(capacityBytes: image.logicalSize, readOnly: !writable,
                                   supportsDiscard: writable, supportsWriteZeroes: writable)
    }

    /// Opens the backend a parsed `zstd:` spec describes; a failure carries
    /// the image error beneath it.
    public static func open(_ spec: ZstdBackendSpec) throws(BackendError) -> ZstdBackendFactory {
        do {
            return try ZstdBackendFactory(options: ZstdBackendOptions(
                imagePath: spec.image, overlayPath: spec.overlay,
                cacheBytes: spec.cacheBytes))
        } catch {
            throw BackendError(kind: error.isOverlayBusy ? .busy : .image, context: "zstd image \(spec.image)", source: error)
        }
    }

    public var notes: [Note] { recoveryNote.map { [Note(.warning, $0)] } ?? [] }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        guard depth > 0 && depth <= 32768 else { throw .invalidSpec("queue depth \(depth) is not in 1...32768") }
        do {
            let reader = try ZstdBaseReader(image: image, cache: cache, pool: pool, slot: queueIndex,
                                            readahead: options.readahead)
            return ZstdQueueBackend(base: reader, overlay: overlay, capacityBytes: image.logicalSize, depth: depth,
                                    parkTimeout: Self.parkTimeout)
        } catch {
            throw .invalidSpec("zstd queue \(queueIndex): \(error.description)")
        }
    }

    /// Seconds a read may wait for the pool before it fails (a decode takes
    /// milliseconds; this only ends a read whose decode can never finish).
    static let parkTimeout: Double = 120

    /// (chunks decoded by the pool, pool decodes that failed); zeros without a pool.
    public var poolStatistics: (decoded: Int, failed: Int) { pool?.statistics() ?? (0, 0) }

    /// Flushes the overlay (what a guest FLUSH does): 0 or a negated errno.
    @discardableResult
    public func flush() -> Int32 { overlay?.flush() ?? 0 }

    /// Sectors the overlay holds (0 without one).
    public var overlaySectors: UInt64 { overlay?.map.allocatedSectors() ?? 0 }

    /// Drops the overlay's final flush: the next close behaves like a crash (tests).
    func simulateCrashOnClose() { overlay?.abandoned.store(true, ordering: .relaxed) }
}
