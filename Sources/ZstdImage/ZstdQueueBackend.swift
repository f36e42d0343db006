import BlockBackends
import Glibc
import ImageOverlay
import SystemSupport

/// One queue's handle on a zstd image: the overlaid-backend core with a
/// decompressing base reader.
typealias ZstdQueueBackend = OverlaidQueueBackend<ZstdBaseReader>

/// One queue's reader of a zstd image's base bytes: chunks come from the
/// shared cache; on a miss the chunk goes to the decompression pool and the
/// read parks (-EAGAIN) until the pool wakes this queue. Without a pool (no
/// cache, or too small a one) or with its job ring full, the chunk is
/// decompressed here, inline. Sequential reads ask the pool for the next
/// chunks ahead of the reader. Owns its waker, its decoder and its chunk
/// buffer; allocates nothing per read.
final class ZstdBaseReader: OverlaidBaseReader {
    private let image: SeekableImage
    private let cache: ChunkCache?
    private let pool: DecompressionPool?
    private let slot: Int
    private let readahead: Bool
    private let waker: QueueWaker?
    private let decoder: ChunkDecoder
    /// Decompression target; swapped with a cache buffer on insert.
    private var chunkBuffer: UnsafeMutableRawPointer
    /// The chunk `chunkBuffer` holds (-1: none).
    private var bufferedChunk = -1
    /// The last chunk this queue read from the base, for sequential readahead.
    private var lastChunk = -2
    /// The highest chunk readahead asked the pool for.
    private var readaheadMark = -1
    /// The first chunk the last parked read waits for.
    private var pendingChunk = -1
    /// The most chunks a read may span and still park: a parked read is
    /// retried from its start, so all its chunks must fit in the cache at
    /// once with room to spare. Longer reads decode inline.
    private let maxParkedSpan: Int

    /// - Parameters:
    ///   - pool: decodes misses off this thread (needs `cache`); nil decodes inline.
    ///   - slot: this queue's waker slot in the pool.
    ///   - readahead: ask the pool for the next chunks on sequential reads.
    init(image: SeekableImage, cache: ChunkCache?, pool: DecompressionPool?, slot: Int,
         readahead: Bool) throws(ImageError) {
        self.image = image
        self.readahead = readahead
        self.cache = cache
        let usable = cache != nil && slot >= 0 && slot < DecompressionPool.maxWaiters
        self.pool = usable ? pool : nil
        self.slot = slot
        if let pool = self.pool {
            let waker: QueueWaker
            do { waker = try QueueWaker() } catch { throw .system(error) }
            pool.register(waker, slot: slot)
            self.waker = waker
        } else {
            waker = nil
        }
        maxParkedSpan = DecompressionPool.maxParkedSpan(cache: cache)
        decoder = try ChunkDecoder(image: image)
        chunkBuffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
    }

    deinit {
        if waker != nil { pool?.unregister(slot: slot) }
        chunkBuffer.deallocate()
    }

    var wakeFD: Int32 { waker?.fd ?? -1 }

    func takeWake() -> Bool { waker?.take() ?? false }

    func parkTicket() -> ParkTicket? {
        pool == nil ? nil : ParkTicket(unit: pendingChunk, serial: 0)
    }

    func keepWaiting(_ ticket: inout ParkTicket) -> Bool {
        ticket.unit = pendingChunk
        return true
    }

    func awaitsPendingWork(_ ticket: ParkTicket) -> Bool {
        guard let pool, ticket.unit >= 0 else { return false }
        return pool.isPending(ticket.unit)
    }

    /// Copies base bytes `[from, to)` out of their chunks; -EAGAIN when some
    /// chunk is being decoded by the pool. A read spanning several chunks
    /// first asks for every missing one at once (they decode in parallel)
    /// and copies nothing until all are there, so a read woken once per
    /// decoded chunk never copies its first chunks again and again.
    func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
        let first = image.chunk(containing: start)
        let span = image.chunk(containing: end - 1) - first + 1
        let pool = span <= maxParkedSpan ? self.pool : nil
        if let pool, span > 1 {
            switch requestMissing(first..<(first + span), pool: pool) {
            case 0: break
            case let rc: return rc
            }
        }
        var position = start
        while position < end {
            let index = image.chunk(containing: position)
            let chunkStart = image.chunkStart(index)
            let within = Int(position - chunkStart)
            let length = Int(min(end, chunkStart + UInt64(image.header.chunkLength(index))) - position)
            position += UInt64(length)
            if index == bufferedChunk {
                cursor.copyIn(from: chunkBuffer + within, length: length)
            } else if cache?.withChunk(index, { cursor.copyIn(from: $0 + within, length: length) }) != true {
                switch miss(index, pool: pool, within: within, length: length, into: &cursor) {
                case 0: break
                case -EAGAIN:
                    pendingChunk = index
                    return -EAGAIN
                case let rc: return rc
                }
            }
            if index != lastChunk {
                if index == lastChunk + 1 { readAhead(after: index, span: span) }
                lastChunk = index
            }
        }
        return 0
    }

    /// Asks the pool for every chunk of `chunks` not in the cache: -EAGAIN
    /// if some are being decoded, 0 if all are there (or left to the copy
    /// loop to decode inline), -EIO if one failed.
    private func requestMissing(_ chunks: Range<Int>, pool: DecompressionPool) -> Int32 {
        guard let cache else { return 0 }
        var waiting = -1
        for index in chunks where !cache.contains(index) {
            // The chunk this queue last waited for, decoded and already evicted: the copy loop decodes it (progress).
            if index == pendingChunk && !pool.isPending(index) { continue }
            switch pool.submit(index, waiter: slot) {
            case .queued: if waiting < 0 { waiting = index }
            case .failed: return -EIO
            case .ready, .full: break
            }
        }
        guard waiting >= 0 else { return 0 }
        pendingChunk = waiting
        return -EAGAIN
    }

    /// A cache miss of chunk `index`: handed to the pool (-EAGAIN), or
    /// decoded here and its bytes copied (0), or -EIO.
    private func miss(_ index: Int, pool: DecompressionPool?, within: Int, length: Int,
                      into cursor: inout IovecCursor) -> Int32 {
        // The chunk this queue last waited for, decoded and already evicted: decode it here (progress).
        if let pool, !(index == pendingChunk && !pool.isPending(index)) {
            switch pool.submit(index, waiter: slot) {
            case .queued: return -EAGAIN
            case .failed: return -EIO
            case .ready:
                if cache?.withChunk(index, { cursor.copyIn(from: $0 + within, length: length) }) == true { return 0 }
            case .full: break
            }
        }
        return decodeInline(index, within: within, length: length, into: &cursor)
    }

    private func decodeInline(_ index: Int, within: Int, length: Int, into cursor: inout IovecCursor) -> Int32 {
        do {
            try decoder.decode(index, into: chunkBuffer)
        } catch {
            bufferedChunk = -1
            return -EIO
        }
        cursor.copyIn(from: chunkBuffer + within, length: length)
        if let cache {
            cache.insert(index, buffer: &chunkBuffer)
            bufferedChunk = -1
        } else {
            bufferedChunk = index
        }
        return 0
    }

    /// On a sequential step into chunk `index` by a read spanning `span`
    /// chunks, asks the pool for the next chunks not asked for yet: as many
    /// as the read spans (the next read's), at least two per worker.
    private func readAhead(after index: Int, span: Int) {
        guard readahead, let pool, let cache else { return }
        let window = min(max(2 * pool.threadCount, span), max(1, maxParkedSpan))
        let last = min(image.chunkCount - 1, index + window)
        var next = readaheadMark >= index && readaheadMark <= last ? readaheadMark + 1 : index + 1
        while next <= last {
            if !cache.contains(next) { _ = pool.submit(next, waiter: nil) }
            next += 1
        }
        readaheadMark = last
    }
}
