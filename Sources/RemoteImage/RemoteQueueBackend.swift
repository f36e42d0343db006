import BlockBackends
import Glibc
import ImageOverlay
import SystemSupport
import Synchronization
import ZstdImage

/// One queue's handle on a remote image: the overlaid-backend core with a
/// base reader that parks reads whose chunks are not local yet.
typealias RemoteQueueBackend = OverlaidQueueBackend<RemoteBaseReader>

/// One queue's reader of a remote image's base bytes. Reads are served from
/// local tiers on the queue thread; a read needing a chunk that is not local
/// returns -EAGAIN after requesting it, so the core parks it (its iovecs stay
/// valid until reaped, per the `QueueBackend` contract) and retries it when
/// the fetcher wakes this queue through `wakeFD`: the queue thread never
/// waits for the network. With a zstd image, a chunk missing from the
/// decompressed cache whose frame is local goes to the decompression pool
/// and the read parks likewise (decoded inline without a pool or when its
/// ring is full). Owns its waker, its slot in the store and the pool, and the
/// spare chunk buffers; allocates nothing per read.
final class RemoteBaseReader: OverlaidBaseReader {
    private let store: RemoteChunkStore
    private let zstd: ZstdLayer?
    private let waker: QueueWaker
    private let slot: Int
    private let local: LocalRemoteSource
    private var readahead: ReadaheadWindow
    /// Where the last read of this queue ended (sequential detection).
    private var lastEnd: UInt64 = .max
    /// This queue's side of `record-trace=` (nil: not recording).
    private var trace: TraceFilter?
    /// Set by a base read that found a chunk missing: the first such chunk.
    private var missing = -1

    /// The zstd side of a compressed remote image: the image, this queue's
    /// decoder (reading frames through the local-only source), the shared
    /// cache of decompressed chunks and the shared decompression pool.
    final class ZstdLayer {
        let image: SeekableImage
        let decoder: ChunkDecoder
        let cache: ChunkCache?
        let pool: DecompressionPool?
        var buffer: UnsafeMutableRawPointer
        /// The last chunk read (sequential detection) and the highest one readahead asked the pool for.
        var lastChunk = -2
        var readaheadMark = -1
        /// The most chunks a read may span and still park on the pool.
        let maxParkedSpan: Int

        init(image: SeekableImage, source: LocalRemoteSource, cache: ChunkCache?,
             pool: DecompressionPool?) throws(ImageError) {
            self.image = image
            decoder = try ChunkDecoder(image: image, source: source)
            self.cache = cache
            self.pool = cache == nil ? nil : pool
            maxParkedSpan = DecompressionPool.maxParkedSpan(cache: cache)
            buffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
        }

        deinit { buffer.deallocate() }

        /// Object chunks holding chunk `index`'s frame.
        func frameChunks(_ index: Int, shift: Int) -> ClosedRange<Int> { image.objectChunks(ofFrame: index, shift: shift) }
    }

    init(store: RemoteChunkStore, zstdImage: SeekableImage?, zstdCache: ChunkCache?, pool: DecompressionPool? = nil,
         slot: Int, readahead: ReadaheadWindow, recorder: TraceRecorder?) throws(RemoteError) {
        self.store = store
        self.slot = slot
        self.readahead = readahead
        trace = recorder?.filter()
        do { waker = try QueueWaker() } catch { throw .system(error) }
        local = LocalRemoteSource(store: store, name: store.name)
        if let zstdImage {
            let usable = slot >= 0 && slot < DecompressionPool.maxWaiters ? pool : nil
            do { zstd = try ZstdLayer(image: zstdImage, source: local, cache: zstdCache, pool: usable) } catch {
                throw .image(error.description)
            }
        } else {
            zstd = nil
        }
        store.register(waker, slot: slot)
        zstd?.pool?.register(waker, slot: slot)
    }

    deinit {
        store.unregister(slot: slot)
        zstd?.pool?.unregister(slot: slot)
    }

    // MARK: OverlaidBaseReader

    var wakeFD: Int32 { waker.fd }

    func takeWake() -> Bool { waker.take() }

    func parkTicket() -> ParkTicket? {
        // Nothing is fetched any more once the object changed: no wake-up would ever come.
        if store.objectChanged.load(ordering: .relaxed) { return nil }
        if missing >= 0 { RemoteStats.bump(store.stats.parkedReads) }  // not the waits for the decompression pool
        return ParkTicket(unit: missing, serial: store.failureSerial)
    }

    func keepWaiting(_ ticket: inout ParkTicket) -> Bool {
        if store.failedSince(missing, serial: ticket.serial) || store.failedSince(ticket.unit, serial: ticket.serial) {
            return false
        }
        ticket.unit = missing
        return true
    }

    func awaitsPendingWork(_ ticket: ParkTicket) -> Bool {
        // Units below -1 are decompressed chunks parked on the pool (-2 - index), others object chunks.
        if ticket.unit >= 0 { return store.isInFlight(ticket.unit) }
        guard ticket.unit < -1, let pool = zstd?.pool else { return false }
        return pool.isPending(-2 - ticket.unit)
    }

    func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
        if let zstd { return readCompressed(zstd, from: start, to: end, into: &cursor) }
        var position = start
        while position < end {
            let chunk = Int(position >> UInt64(store.chunkShift))
            let within = Int(position - store.chunkStart(chunk))
            let length = Int(min(end - position, UInt64(store.chunkLength(chunk) - within)))
            trace?.note(chunk)
            let hit = store.withLocalChunk(chunk, spare: &local.spare) { cursor.copyIn(from: $0 + within, length: length) }
            if !hit {
                requestMissing(from: chunk, through: Int((end - 1) >> UInt64(store.chunkShift)))
                return -EAGAIN
            }
            position += UInt64(length)
        }
        return 0
    }

    private func readCompressed(_ z: ZstdLayer, from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
        let first = z.image.chunk(containing: start)
        let span = z.image.chunk(containing: end - 1) - first + 1
        let pool = span <= z.maxParkedSpan ? z.pool : nil
        // Several chunks: ask for all missing ones at once, copy nothing until all are there.
        if let pool, span > 1, !allDecoded(z, first..<(first + span), pool: pool) { return -EAGAIN }
        var position = start
        while position < end {
            let index = z.image.chunk(containing: position)
            let chunkStart = z.image.chunkStart(index)
            let within = Int(position - chunkStart)
            let length = Int(min(end, chunkStart + UInt64(z.image.header.chunkLength(index))) - position)
            trace?.note(index)
            position += UInt64(length)
            let hit = z.cache?.withChunk(index) { cursor.copyIn(from: $0 + within, length: length) } ?? false
            if !hit {
                if let pool {
                    let frame = z.frameChunks(index, shift: store.chunkShift)
                    if let absent = frame.first(where: { !store.isLocal($0) }) {
                        requestMissing(from: absent, through: frame.upperBound)
                        return -EAGAIN
                    }
                    switch pool.submit(index, waiter: slot) {
                    case .queued:
                        missing = -2 - index
                        return -EAGAIN
                    case .failed:
                        discardFrame(z, index)
                        return -EAGAIN
                    case .ready:
                        if z.cache?.withChunk(index, { cursor.copyIn(from: $0 + within, length: length) }) == true { break }
                        fallthrough
                    case .full:
                        if let rc = decodeInline(z, index, within: within, length: length, into: &cursor) { return rc }
                    }
                } else if let rc = decodeInline(z, index, within: within, length: length, into: &cursor) {
                    return rc
                }
            }
            if index != z.lastChunk {
                if index == z.lastChunk + 1 { readAheadDecoded(z, after: index, span: span) }
                z.lastChunk = index
            }
        }
        return 0
    }

    /// Whether every chunk of `chunks` is in the decompressed cache; if not,
    /// asks for what is missing (frames from the store, decodes from the
    /// pool) and sets `missing` to what the read waits for.
    private func allDecoded(_ z: ZstdLayer, _ chunks: Range<Int>, pool: DecompressionPool) -> Bool {
        guard let cache = z.cache else { return true }
        var absentObject = -1, queued = -1
        for index in chunks where !cache.contains(index) {
            let frame = z.frameChunks(index, shift: store.chunkShift)
            if let absent = frame.first(where: { !store.isLocal($0) }) {
                requestMissing(from: absent, through: frame.upperBound)
                if absentObject < 0 { absentObject = absent }
                continue
            }
            switch pool.submit(index, waiter: slot) {
            case .queued: if queued < 0 { queued = index }
            case .failed:
                discardFrame(z, index)
                if absentObject < 0 { absentObject = frame.lowerBound }
            case .ready, .full: break  // the copy loop copies or decodes it
            }
        }
        if absentObject >= 0 {
            missing = absentObject
        } else if queued >= 0 {
            missing = -2 - queued
        } else {
            return true
        }
        return false
    }

    /// Decodes chunk `index` on this thread and copies its bytes: nil when
    /// done, or -EAGAIN after asking for what is missing or bad.
    private func decodeInline(_ z: ZstdLayer, _ index: Int, within: Int, length: Int,
                              into cursor: inout IovecCursor) -> Int32? {
        do {
            try z.decoder.decode(index, into: z.buffer)
        } catch ImageError.system(let s) where s.errno.rawValue == EAGAIN {
            requestMissing(from: local.missingChunk, through: z.frameChunks(index, shift: store.chunkShift).upperBound)
            return -EAGAIN
        } catch {
            discardFrame(z, index)
            return -EAGAIN
        }
        cursor.copyIn(from: z.buffer + within, length: length)
        if let cache = z.cache { cache.insert(index, buffer: &z.buffer) }
        return nil
    }

    /// Bad compressed bytes for chunk `index`: never keep them; the retry refetches.
    private func discardFrame(_ z: ZstdLayer, _ index: Int) {
        let frame = z.frameChunks(index, shift: store.chunkShift)
        for c in frame { store.discard(c) }
        requestMissing(from: frame.lowerBound, through: frame.upperBound)
    }

    private func frameIsLocal(_ z: ZstdLayer, _ index: Int) -> Bool {
        for c in z.frameChunks(index, shift: store.chunkShift) where !store.isLocal(c) { return false }
        return true
    }

    /// On a sequential step into chunk `index` by a read spanning `span`
    /// chunks, asks the pool for the next chunks whose frames are local: as
    /// many as the read spans (the next read's), at least two per worker.
    private func readAheadDecoded(_ z: ZstdLayer, after index: Int, span: Int) {
        guard readahead.enabled, let pool = z.pool, let cache = z.cache else { return }
        let window = min(max(2 * pool.threadCount, span), max(1, z.maxParkedSpan))
        let last = min(z.image.chunkCount - 1, index + window)
        var next = z.readaheadMark >= index && z.readaheadMark <= last ? z.readaheadMark + 1 : index + 1
        while next <= last {
            if !cache.contains(next) {
                guard frameIsLocal(z, next) else { break }  // asked again once its frame landed
                _ = pool.submit(next, waiter: nil)
            }
            next += 1
        }
        z.readaheadMark = next - 1
    }

    /// Requests every chunk of `first...last` that is not local; `missing` = the first.
    private func requestMissing(from first: Int, through last: Int) {
        missing = first
        guard first >= 0 else { return }
        for c in first...max(first, min(last, store.chunkCount - 1)) where c == first || !store.isLocal(c) {
            store.request(c, waiter: slot, urgent: true)
        }
    }

    /// On a read continuing the previous one (within a chunk of where it
    /// ended), asks for the chunks ahead in the background; the window
    /// grows while the reader stays sequential and each chunk is asked once.
    func willRead(offset: UInt64, end: UInt64) {
        defer { lastEnd = end }
        guard readahead.enabled else { return }
        let slack = UInt64(store.chunkSize)
        guard lastEnd != .max, offset + slack >= lastEnd, offset <= lastEnd + slack else {
            readahead.reset()
            return
        }
        let objectChunkOfEnd: Int
        if let z = zstd {
            objectChunkOfEnd = z.frameChunks(z.image.chunk(containing: end - 1), shift: store.chunkShift).upperBound
        } else {
            objectChunkOfEnd = Int((end - 1) >> UInt64(store.chunkShift))
        }
        guard let range = readahead.advance(readerAt: objectChunkOfEnd, chunkCount: store.chunkCount) else { return }
        for c in range where !store.isLocal(c) {
            RemoteStats.bump(store.stats.readaheadRequests)
            store.request(c, waiter: nil, urgent: false)
        }
    }
}
