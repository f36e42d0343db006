import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc
import Logging
import ZstdImage

/// A backend over an image in HTTP(S) or S3 object storage, fetched lazily
/// in chunks and cached in memory and on local disk; a raw image or a zstd
/// seekable image (then decompressed locally). Writes go to an overlay file
/// when one is given; the remote object is never modified. Owns the store
/// (fetcher thread, tiers), the optional overlay and zstd state, and the
/// optional prefetcher; queue handles share them.
public final class RemoteBackendFactory: BlockBackendFactory, @unchecked Sendable {
    public let options: RemoteOptions
    public let endpoint: RemoteEndpoint
    public let geometry: BackendGeometry
    public let store: RemoteChunkStore
    public let isCompressed: Bool
    /// Open-time facts worth logging (disk cache reused or reset, overlay recovery).
    public let noteLines: [String]
    let object: ObjectInfo
    let overlay: Overlay?
    let zstdImage: SeekableImage?
    let zstdCache: ChunkCache?
    /// Decodes decompressed-cache misses off the queue threads (zstd images).
    let zstdPool: DecompressionPool?
    private var prefetcher: RemotePrefetcher?
    private var tracePrefetcher: RemotePrefetcher?
    /// `record-trace=`: the guest's access order, written at shutdown.
    let recorder: TraceRecorder?
    var traceWritten = false

    public var summary: String {
        var parts = ["\(endpoint.displayName) (\(isCompressed ? "zstd" : "raw"), \(humanBytes(object.size)))"]
        parts.append(options.overlayPath.map { "overlay \($0)" } ?? "ro")
        parts.append("chunks \(humanBytes(UInt64(options.chunkSize))), memory \(humanBytes(options.memoryBytes))")
        parts.append(options.cacheDirectory.map { dir in
            "disk cache in \(dir)" + (options.cacheSizeBytes.map { " (at most \(humanBytes($0)))" } ?? "")
        } ?? "no disk cache")
        return parts.joined(separator: ", ")
    }

    public var stats: RemoteStats { store.stats }

    /// Most chunks an object may have (bounds the disk tier's bitmap and hash table: 2 + 128 MiB).
    static let maxChunks: UInt64 = 1 << 24

    /// Probes the object, opens the caches, detects the format, opens the overlay.
    public init(options: RemoteOptions, logger: Logger) throws(RemoteError) {
        self.options = options
        endpoint = try RemoteEndpoint.resolve(options)
        let policy = FetchPolicy(options)
        let object = try ObjectProbe.probe(endpoint, policy: policy, logger: logger)
        // The size comes from the server: bound it before any arithmetic or allocation depends on it.
        guard object.size <= UInt64(options.chunkSize) * Self.maxChunks else {
            throw .badResponse(url: endpoint.displayName, reason: "the object claims \(object.size) bytes; with chunk=\(humanBytes(UInt64(options.chunkSize))) "
                + "at most \(humanBytes(UInt64(options.chunkSize) * Self.maxChunks)) are supported (use a larger chunk=)")
        }
        self.object = object
        var notes: [String] = []
        if object.etag == nil && object.lastModified == nil {
            notes.append("\(endpoint.displayName) has neither ETag nor Last-Modified: a changed object can only be detected by its size")
        }
        var disk: DiskChunkCache?
        if let dir = options.cacheDirectory {
            let key = String(sha256Hex(Array("\(endpoint.url)|\(options.chunkSize)".utf8)).prefix(32))
            disk = try DiskChunkCache(directory: dir, key: key,
                                      identity: .init(objectSize: object.size, chunkSize: options.chunkSize,
                                                      validator: object.validator),
                                      budgetBytes: options.cacheSizeBytes, logger: logger)
            notes.append(disk!.openNote)
        }
        let stats = RemoteStats()
        let lanes = max(1, min(options.fetchThreads, options.connections))
        var fetchers: [RangeFetcher] = []
        for lane in 0..<lanes {
            // Connections split over the lanes, the first ones taking the remainder.
            let connections = options.connections / lanes + (lane < options.connections % lanes ? 1 : 0)
            fetchers.append(try RangeFetcher(endpoint: endpoint, objectSize: object.size, chunkSize: options.chunkSize,
                                             connections: connections, policy: policy, etag: object.etag,
                                             lastModified: object.lastModified, stats: stats, logger: logger))
        }
        let store = try RemoteChunkStore(objectSize: object.size, chunkSize: options.chunkSize,
                                         memoryBytes: options.memoryBytes, disk: disk, fetchers: fetchers, stats: stats,
                                         name: endpoint.displayName, logger: logger)
        self.store = store
        store.startFetchers()
        do {
            let compressed = try Self.detectCompressed(options.format, store: store, name: endpoint.displayName)
            isCompressed = compressed
            var base: OverlayBase
            if compressed {
                let image = try Self.openCompressed(store: store, name: endpoint.displayName)
                guard image.logicalSize % 512 == 0 else {
                    throw RemoteError.image("\(endpoint.displayName) holds \(image.logicalSize) bytes, not whole sectors")
                }
                zstdImage = image
                let cacheBytes = options.decompressedCacheBytes
                    ?? ZstdBackendOptions.defaultCacheBytes(logicalSize: image.logicalSize)
                let cache = ChunkCache(capacityBytes: cacheBytes, chunkSize: image.chunkSize)
                zstdCache = cache
                if let cache, cache.capacityChunks >= DecompressionPool.minimumCacheChunks {
                    let name = endpoint.displayName
                    do {
                        zstdPool = try DecompressionPool(image: image, cache: cache) {
                            LocalRemoteSource(store: store, name: name)
                        }
                    } catch { throw RemoteError.image("\(name): \(error.description)") }
                } else {
                    zstdPool = nil
                }
                base = OverlayBase(image: image)
            } else {
                guard object.size % 512 == 0 else {
                    throw RemoteError.image("\(endpoint.displayName) is \(object.size) bytes, not a whole number of 512-byte sectors")
                }
                zstdImage = nil
                zstdCache = nil
                zstdPool = nil
                base = OverlayBase(logicalSize: object.size, chunkSize: 512,
                                   contentDigest: XXH64.hash(Array("\(endpoint.displayName)|\(object.validator)".utf8)),
                                   name: endpoint.displayName)
            }
            if let path = options.overlayPath {
                do { overlay = try Overlay.open(path: path, base: base) } catch {
                    throw RemoteError.image("overlay \(path): \(error.description)")
                }
                if let note = overlay?.recoveryNote { notes.append(note) }
            } else {
                overlay = nil
            }
            let writable = overlay != nil
            geometry = BackendGeometry(capacityBytes: base.logicalSize, readOnly: !writable,
                                       supportsDiscard: writable, supportsWriteZeroes: writable)
        } catch let e as RemoteError {
            store.stopFetchers()
            throw e
        } catch {
            store.stopFetchers()
            throw .image("\(error)")
        }
        let units = zstdImage?.chunkCount ?? store.chunkCount
        recorder = options.recordTracePath.map { TraceRecorder(path: $0, unitCount: units) }
        if let path = options.prefetchTracePath {
            switch Self.loadTrace(path: path, object: object, chunkSize: options.chunkSize) {
            case .success(let trace):
                notes.append("prefetch-trace: replaying \(trace.chunks.count) chunks recorded in \(path)")
                tracePrefetcher = RemotePrefetcher(store: store, plan: .trace(trace.chunks),
                                                   connections: options.connections, logger: logger)
            case .failure(let why):
                notes.append("prefetch-trace: not replayed: \(why)")
            }
        }
        noteLines = notes
        if let rate = options.prefetchBytesPerSecond {
            prefetcher = RemotePrefetcher(store: store, plan: .wholeObject(bytesPerSecond: rate),
                                          connections: options.connections, logger: logger)
        }
    }

    /// Starts the trace replay and the whole-object prefetch, once the device
    /// serves: started at open, they took the (emulated) CPU and the
    /// connections from the kernel's probe reads and the mount, and the
    /// device came up 1.4-1.8 s later in the model-load benchmark.
    public func startBackgroundWork() {
        tracePrefetcher?.start()
        prefetcher?.start()
    }

    deinit { shutdown() }

    /// Stops the prefetcher and the fetcher, makes the disk cache durable.
    public func shutdown() {
        tracePrefetcher?.stop()
        tracePrefetcher = nil
        prefetcher?.stop()
        prefetcher = nil
        writeTrace()
        store.stopFetchers()
        store.persist()
        if overlay?.abandoned.load(ordering: .relaxed) != true { _ = overlay?.flush() }
    }

    /// Drops the overlay's final flush: the next close behaves like a crash (tests).
    func simulateCrashOnClose() { overlay?.abandoned.store(true, ordering: .relaxed) }

    /// Opens the backend a parsed remote spec describes; a failure carries
    /// the remote error beneath it.
    public static func open(_ spec: RemoteBackendSpec, logger: Logger) throws(BackendError) -> RemoteBackendFactory {
        let parsed = try RemoteOptions.parse(url: spec.url, options: spec.options)
        do { return try RemoteBackendFactory(options: parsed, logger: logger) } catch {
            throw BackendError(kind: .remote, context: "remote image", source: error)
        }
    }

    public var notes: [Note] { noteLines.map { Note(.info, $0) } }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        guard depth > 0 && depth <= 32768 else { throw .invalidSpec("queue depth \(depth) is not in 1...32768") }
        guard queueIndex >= 0 && queueIndex < RemoteChunkStore.blockingSlot else {
            throw .invalidSpec("remote backend supports at most \(RemoteChunkStore.blockingSlot) queues")
        }
        do {
            let reader = try RemoteBaseReader(store: store, zstdImage: zstdImage, zstdCache: zstdCache, pool: zstdPool,
                                              slot: queueIndex, readahead: readaheadWindow, recorder: recorder)
            return RemoteQueueBackend(base: reader, overlay: overlay, capacityBytes: geometry.capacityBytes,
                                      depth: depth, parkTimeout: options.requestTimeoutSeconds * 2 + 1)
        } catch {
            throw BackendError(kind: .remote, context: "remote queue \(queueIndex)", source: error)
        }
    }

    /// Readahead for one queue: from `readahead=` chunks up to `readahead-max=`,
    /// never more than half the memory tier (chunks read ahead wait there).
    var readaheadWindow: ReadaheadWindow {
        let memoryChunks = Int(min(options.memoryBytes / UInt64(options.chunkSize), 1 << 20))
        let maximum = min(max(options.readaheadChunks, options.readaheadMaxChunks), max(1, memoryChunks / 2))
        return ReadaheadWindow(initial: options.readaheadChunks, maximum: maximum)
    }

    /// Flushes the overlay (0 or a negated errno).
    @discardableResult
    public func flush() -> Int32 { overlay?.flush() ?? 0 }

    static func openCompressed(store: RemoteChunkStore, name: String) throws(RemoteError) -> SeekableImage {
        let source = try BlockingRemoteSource(store: store, name: name)
        do throws(ImageError) {
            return try SeekableImage.open(source: source)
        } catch { throw .image("\(name): \(error.description)") }
    }

    /// zstd seekable images start with their header's skippable frame.
    static func detectCompressed(_ format: RemoteFormat, store: RemoteChunkStore, name: String) throws(RemoteError) -> Bool {
        switch format {
        case .raw: return false
        case .zstd: return true
        case .auto:
            guard store.objectSize >= 8 else { return false }
            var magic: UInt32 = 0
            let source = try BlockingRemoteSource(store: store, name: name)
            do throws(ImageError) {
                try source.read(into: &magic, count: 4, at: 0)
            } catch { throw .image("\(name): \(error.description)") }
            return UInt32(littleEndian: magic) == ImageLayout.headerFrameMagic
        }
    }
}

extension RemoteBackendFactory {
    public func statistics() -> [(String, UInt64)]? {
        var rows = store.stats.snapshot()
        rows.append(("object_bytes", store.objectSize))
        rows.append(("chunk_bytes", UInt64(store.chunkSize)))
        rows.append(("chunks_total", UInt64(store.chunkCount)))
        rows.append(("chunks_on_disk", UInt64(store.disk?.presentChunks ?? 0)))
        rows.append(("chunks_evicted_disk", store.disk?.evictedChunks ?? 0))
        rows.append(("disk_cache_allocated_bytes", store.disk?.allocatedBytes ?? 0))
        rows.append(("disk_cache_budget_bytes", store.disk?.budgetBytes ?? 0))
        rows.append(("chunks_in_memory", UInt64(store.memory.statistics().held)))
        rows.append(("overlay_sectors", overlay?.allocatedSectors ?? 0))
        return rows
    }
}
