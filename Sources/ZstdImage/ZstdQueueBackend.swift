import BlockBackends
import Glibc

/// One queue's handle on a zstd image (and its overlay, if any). Synchronous:
/// every op runs when prepared, on the queue thread, and its completion is
/// published by `submit()` (`completionFD == -1`). Reads merge overlay and
/// base sector by sector: sectors the overlay holds come from its file, the
/// rest from the base chunk, taken from the shared cache or decompressed here
/// on a miss (then handed to the cache). Owns its decoder, its chunk buffer
/// and its scratch iovecs; allocates nothing per op.
final class ZstdQueueBackend: QueueBackend {
    let completionFD: Int32 = -1
    let capacity: Int
    var inFlight: Int { completions.count }

    private let image: SeekableImage
    private let overlay: Overlay?
    private let cache: ChunkCache?
    private let readahead: ChunkPrefetcher?
    private let decoder: ChunkDecoder
    private let completions: CompletionRing
    /// Decompression target; swapped with a cache buffer on insert.
    private var chunkBuffer: UnsafeMutableRawPointer
    /// The chunk `chunkBuffer` holds (-1: none).
    private var bufferedChunk = -1
    private let scratch: UnsafeMutablePointer<iovec>
    private static let scratchCount = 256
    private let capacityBytes: UInt64
    /// The last chunk this queue read from the base, for sequential readahead.
    private var lastChunk = -2

    init(image: SeekableImage, overlay: Overlay?, cache: ChunkCache?, readahead: ChunkPrefetcher?,
         depth: Int) throws(ZstdImageError) {
        self.image = image
        self.overlay = overlay
        self.cache = cache
        self.readahead = readahead
        decoder = try ChunkDecoder(image: image)
        capacity = depth
        completions = CompletionRing(capacity: depth)
        chunkBuffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
        scratch = .allocate(capacity: Self.scratchCount)
        capacityBytes = image.logicalSize
    }

    deinit {
        chunkBuffer.deallocate()
        scratch.deallocate()
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        completions.push(tag: tag, result: read(offset: offset, iovecs: iovecs, count: count))
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        completions.push(tag: tag, result: write(offset: offset, iovecs: iovecs, count: count))
    }

    func prepareFlush(tag: UInt32) {
        completions.push(tag: tag, result: overlay?.flush() ?? 0)
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length))
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length))
    }

    func submit() {
        completions.publish()
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        completions.pop(into: buffer)
    }

    @inline(__always)
    private func inRange(_ offset: UInt64, _ length: UInt64) -> Bool {
        offset <= capacityBytes && length <= capacityBytes - offset
    }

    private func read(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int) -> Int32 {
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        guard total <= UInt64(Int32.max), inRange(offset, total) else { return -EIO }
        var cursor = IovecCursor(iovecs, count: count)
        let rc: Int32
        if let overlay {
            rc = overlay.readMerged(offset: offset, total: total, cursor: &cursor, scratch: scratch,
                                    scratchCount: Self.scratchCount) { from, to, c in readBase(from: from, to: to, into: &c) }
        } else {
            rc = readBase(from: offset, to: offset + total, into: &cursor)
        }
        return rc < 0 ? rc : Int32(total)
    }

    /// Copies base bytes `[from, to)` out of their chunks.
    private func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
        var position = start
        while position < end {
            let index = image.chunk(containing: position)
            let chunkStart = image.chunkStart(index)
            let within = Int(position - chunkStart)
            let length = Int(min(end, chunkStart + UInt64(image.header.chunkLength(index))) - position)
            if index != bufferedChunk {
                let hit = cache?.withChunk(index) { bytes in cursor.copyIn(from: bytes + within, length: length) } ?? false
                if !hit {
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
                }
            } else {
                cursor.copyIn(from: chunkBuffer + within, length: length)
            }
            if index != lastChunk {
                if index == lastChunk + 1 { readahead?.request(index + 1) }
                lastChunk = index
            }
            position += UInt64(length)
        }
        return 0
    }

    private func write(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int) -> Int32 {
        guard let overlay else { return -EBADF }
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        guard total <= UInt64(Int32.max), inRange(offset, total) else { return -EIO }
        return overlay.write(offset: offset, total: total, iovecs: iovecs, count: count, scratch: scratch,
                             scratchCount: Self.scratchCount)
    }

    private func zero(offset: UInt64, length: UInt64) -> Int32 {
        guard let overlay else { return -EBADF }
        guard inRange(offset, length) else { return -EIO }
        return overlay.zero(offset: offset, length: length)
    }
}
