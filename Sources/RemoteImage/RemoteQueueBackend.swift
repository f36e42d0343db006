import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc
import Synchronization
import ZstdImage

/// One queue's handle on a remote image. Reads are served from local tiers
/// on the queue thread; a read needing a chunk that is not local is parked
/// (its iovecs stay valid until reaped, per the `QueueBackend` contract),
/// the chunk is requested, and the read is retried when the fetcher wakes
/// this queue through `completionFD`, so the queue thread never waits for
/// the network. Writes, flushes, discards and write-zeroes go to the overlay.
/// With a zstd image, base reads decompress frames whose compressed bytes
/// come from the store. Owns its parked-op table, completion ring, waker,
/// spare chunk buffers and scratch iovecs; allocates nothing per op.
final class RemoteQueueBackend: QueueBackend {
    let capacity: Int
    var completionFD: Int32 { waker.fd }
    var inFlight: Int { completions.count + parkedCount }

    private struct ParkedRead {
        var tag: UInt32
        var offset: UInt64
        var total: UInt64
        var iovecs: UnsafePointer<iovec>
        var count: Int
        var chunk: Int
        var serial: UInt64
        var deadline: Double
        var attempts: Int
    }

    private let store: RemoteChunkStore
    private let overlay: Overlay?
    private let zstd: ZstdLayer?
    private let waker: QueueWaker
    private let slot: Int
    private let completions: CompletionRing
    private let parked: UnsafeMutablePointer<ParkedRead>
    private var parkedCount = 0
    private let scratch: UnsafeMutablePointer<iovec>
    private static let scratchCount = 256
    /// Retries of one parked read before it fails (each retry follows a wake-up).
    private static let maxRetries = 64
    private let local: LocalRemoteSource
    private let capacityBytes: UInt64
    private let readahead: Int
    private let parkTimeout: Double
    /// Where the last read of this queue ended (sequential detection).
    private var lastEnd: UInt64 = .max
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

    init(store: RemoteChunkStore, overlay: Overlay?, zstdImage: SeekableImage?, zstdCache: ChunkCache?,
         capacityBytes: UInt64, slot: Int, depth: Int, readahead: Int, parkTimeout: Double) throws(RemoteError) {
        self.store = store
        self.overlay = overlay
        self.slot = slot
        self.capacityBytes = capacityBytes
        self.readahead = readahead
        self.parkTimeout = parkTimeout
        capacity = depth
        waker = try QueueWaker()
        local = LocalRemoteSource(store: store, name: store.name)
        if let zstdImage {
            do { zstd = try ZstdLayer(image: zstdImage, source: local, cache: zstdCache) } catch {
                throw .image(error.description)
            }
        } else {
            zstd = nil
        }
        completions = CompletionRing(capacity: depth)
        parked = .allocate(capacity: depth)
        scratch = .allocate(capacity: Self.scratchCount)
        store.register(waker, slot: slot)
    }

    deinit {
        store.unregister(slot: slot)
        parked.deallocate()
        scratch.deallocate()
    }

    // MARK: QueueBackend

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        guard total <= UInt64(Int32.max), inRange(offset, total) else { return completions.push(tag: tag, result: -EIO) }
        noteSequential(offset: offset, end: offset + total)
        var rc = read(offset: offset, total: total, iovecs: iovecs, count: count)
        // Nothing is fetched any more once the object changed: no wake-up would ever come.
        if rc == -EAGAIN, store.objectChanged.load(ordering: .relaxed) { rc = -EIO }
        if rc == -EAGAIN {
            RemoteStats.bump(store.stats.parkedReads)
            park(ParkedRead(tag: tag, offset: offset, total: total, iovecs: iovecs, count: count, chunk: missing,
                            serial: store.failureSerial, deadline: monotonicSeconds() + parkTimeout, attempts: 0))
        } else {
            completions.push(tag: tag, result: rc)
        }
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        guard let overlay else { return completions.push(tag: tag, result: -EROFS) }
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        guard total <= UInt64(Int32.max), inRange(offset, total) else { return completions.push(tag: tag, result: -EIO) }
        completions.push(tag: tag, result: overlay.write(offset: offset, total: total, iovecs: iovecs, count: count,
                                                         scratch: scratch, scratchCount: Self.scratchCount))
    }

    func prepareFlush(tag: UInt32) {
        completions.push(tag: tag, result: overlay?.flush() ?? 0)
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        zero(offset: offset, length: length, tag: tag)
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        zero(offset: offset, length: length, tag: tag)
    }

    func submit() {
        completions.publish()
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        if parkedCount > 0, waker.take() {
            retryParked()
            completions.publish()
        }
        return completions.pop(into: buffer)
    }

    // MARK: reads

    @inline(__always)
    private func inRange(_ offset: UInt64, _ length: UInt64) -> Bool {
        offset <= capacityBytes && length <= capacityBytes - offset
    }

    /// Bytes read, a negated errno, or -EAGAIN with `missing` set (and that
    /// chunk, plus the request's other missing chunks, requested).
    private func read(offset: UInt64, total: UInt64, iovecs: UnsafePointer<iovec>, count: Int) -> Int32 {
        var cursor = IovecCursor(iovecs, count: count)
        missing = -1
        let rc: Int32
        if let overlay {
            rc = overlay.readMerged(offset: offset, total: total, cursor: &cursor, scratch: scratch,
                                    scratchCount: Self.scratchCount) { from, to, c in readBase(from: from, to: to, into: &c) }
        } else {
            rc = readBase(from: offset, to: offset + total, into: &cursor)
        }
        return rc < 0 ? rc : Int32(total)
    }

    private func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
        if let zstd { return readCompressed(zstd, from: start, to: end, into: &cursor) }
        var position = start
        while position < end {
            let chunk = Int(position >> UInt64(store.chunkShift))
            let within = Int(position - store.chunkStart(chunk))
            let length = Int(min(end - position, UInt64(store.chunkLength(chunk) - within)))
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
            let hit = z.cache?.withChunk(index) { cursor.copyIn(from: $0 + within, length: length) } ?? false
            if !hit {
                do {
                    try z.decoder.decode(index, into: z.buffer)
                } catch ImageError.io(_, let e) where e == EAGAIN {
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

    /// On a read continuing the previous one, asks for the next chunks in the background.
    private func noteSequential(offset: UInt64, end: UInt64) {
        defer { lastEnd = end }
        guard readahead > 0, offset == lastEnd else { return }
        let objectChunkOfEnd: Int
        if let z = zstd {
            let index = z.image.chunk(containing: end - 1)
            objectChunkOfEnd = Int((z.image.table.offsets[index] + UInt64(z.image.table.frameSize(index))) >> UInt64(store.chunkShift))
        } else {
            objectChunkOfEnd = Int((end - 1) >> UInt64(store.chunkShift))
        }
        for c in (objectChunkOfEnd + 1)...(objectChunkOfEnd + readahead) where c < store.chunkCount && !store.isLocal(c) {
            RemoteStats.bump(store.stats.readaheadRequests)
            store.request(c, waiter: nil, urgent: false)
        }
    }

    private func park(_ op: ParkedRead) {
        precondition(parkedCount < capacity, "more ops parked than the queue's depth")
        parked[parkedCount] = op
        parkedCount += 1
    }

    /// Retries every parked read; those still missing stay parked, those whose
    /// chunk failed (or ran past the deadline) complete with EIO.
    private func retryParked() {
        var i = 0
        let now = monotonicSeconds()
        while i < parkedCount {
            var op = parked[i]
            var rc = read(offset: op.offset, total: op.total, iovecs: op.iovecs, count: op.count)
            if rc == -EAGAIN {
                if store.failedSince(missing, serial: op.serial) || store.failedSince(op.chunk, serial: op.serial)
                    || now > op.deadline || op.attempts >= Self.maxRetries {
                    rc = -EIO
                } else {
                    op.chunk = missing
                    op.attempts += 1
                    parked[i] = op
                    i += 1
                    continue
                }
            }
            completions.push(tag: op.tag, result: rc)
            parkedCount -= 1
            parked[i] = parked[parkedCount]
        }
    }

    private func zero(offset: UInt64, length: UInt64, tag: UInt32) {
        guard let overlay else { return completions.push(tag: tag, result: -EROFS) }
        guard inRange(offset, length) else { return completions.push(tag: tag, result: -EIO) }
        completions.push(tag: tag, result: overlay.zero(offset: offset, length: length))
    }
}
