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
/// waits for the network. With a zstd image, base reads decompress frames
/// whose compressed bytes come from the store. Owns its waker, its slot in
/// the store and the spare chunk buffers; allocates nothing per read.
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
    /// decoder (reading frames through the local-only source) and the shared
    /// cache of decompressed chunks.
    final class ZstdLayer {
        let image: SeekableImage
        let decoder: ChunkDecoder
        let cache: ChunkCache?
        var buffer: UnsafeMutableRawPointer

        init(image: SeekableImage, source: LocalRemoteSource, cache: ChunkCache?) throws(ImageError) {
            self.image = image
            decoder = try ChunkDecoder(image: image, source: source)
            self.cache = cache
            buffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
        }

        deinit { buffer.deallocate() }
    }

    init(store: RemoteChunkStore, zstdImage: SeekableImage?, zstdCache: ChunkCache?, slot: Int,
         readahead: ReadaheadWindow, recorder: TraceRecorder?) throws(RemoteError) {
        self.store = store
        self.slot = slot
        self.readahead = readahead
        trace = recorder?.filter()
        waker = try QueueWaker()
        local = LocalRemoteSource(store: store, name: store.name)
        if let zstdImage {
            do { zstd = try ZstdLayer(image: zstdImage, source: local, cache: zstdCache) } catch {
                throw .image(error.description)
            }
        } else {
            zstd = nil
        }
        store.register(waker, slot: slot)
    }

    deinit {
        store.unregister(slot: slot)
    }

    // MARK: OverlaidBaseReader

    var wakeFD: Int32 { waker.fd }

    func takeWake() -> Bool { waker.take() }

    func parkTicket() -> ParkTicket? {
        // Nothing is fetched any more once the object changed: no wake-up would ever come.
        if store.objectChanged.load(ordering: .relaxed) { return nil }
        RemoteStats.bump(store.stats.parkedReads)
        return ParkTicket(unit: missing, serial: store.failureSerial)
    }

    func keepWaiting(_ ticket: inout ParkTicket) -> Bool {
        if store.failedSince(missing, serial: ticket.serial) || store.failedSince(ticket.unit, serial: ticket.serial) {
            return false
        }
        ticket.unit = missing
        return true
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
        var position = start
        while position < end {
            let index = z.image.chunk(containing: position)
            let chunkStart = z.image.chunkStart(index)
            let within = Int(position - chunkStart)
            let length = Int(min(end, chunkStart + UInt64(z.image.header.chunkLength(index))) - position)
            trace?.note(index)
            let hit = z.cache?.withChunk(index) { cursor.copyIn(from: $0 + within, length: length) } ?? false
            if !hit {
                do {
                    try z.decoder.decode(index, into: z.buffer)
                } catch ImageError.system(let s) where s.errno.rawValue == EAGAIN {
                    let frameEnd = z.image.table.offsets[index] + UInt64(z.image.table.frameSize(index))
                    requestMissing(from: local.missingChunk, through: Int((frameEnd - 1) >> UInt64(store.chunkShift)))
                    return -EAGAIN
                } catch {
                    // Bad compressed bytes: never keep them; the retry refetches.
                    let first = Int(z.image.table.offsets[index] >> UInt64(store.chunkShift))
                    let frameEnd = z.image.table.offsets[index] + UInt64(z.image.table.frameSize(index))
                    for c in first...Int((frameEnd - 1) >> UInt64(store.chunkShift)) { store.discard(c) }
                    requestMissing(from: first, through: Int((frameEnd - 1) >> UInt64(store.chunkShift)))
                    return -EAGAIN
                }
                cursor.copyIn(from: z.buffer + within, length: length)
                if let cache = z.cache { cache.insert(index, buffer: &z.buffer) }
            }
            position += UInt64(length)
        }
        return 0
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
            let index = z.image.chunk(containing: end - 1)
            objectChunkOfEnd = Int((z.image.table.offsets[index] + UInt64(z.image.table.frameSize(index)) - 1) >> UInt64(store.chunkShift))
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
