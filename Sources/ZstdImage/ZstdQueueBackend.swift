import BlockBackends
import Glibc
import ImageOverlay
import SystemSupport

/// One queue's handle on a zstd image: the overlaid-backend core with a
/// decompressing base reader.
typealias ZstdQueueBackend = OverlaidQueueBackend<ZstdBaseReader>

/// One queue's reader of a zstd image's base bytes: chunks come from the
/// shared cache, or are decompressed here on a miss (then handed to the
/// cache). Never parks. Owns its decoder and its chunk buffer; allocates
/// nothing per read.
final class ZstdBaseReader: OverlaidBaseReader {
    private let image: SeekableImage
    private let cache: ChunkCache?
    private let readahead: ChunkPrefetcher?
    private let decoder: ChunkDecoder
    /// Decompression target; swapped with a cache buffer on insert.
    private var chunkBuffer: UnsafeMutableRawPointer
    /// The chunk `chunkBuffer` holds (-1: none).
    private var bufferedChunk = -1
    /// The last chunk this queue read from the base, for sequential readahead.
    private var lastChunk = -2

    init(image: SeekableImage, cache: ChunkCache?, readahead: ChunkPrefetcher?) throws(ImageError) {
        self.image = image
        self.cache = cache
        self.readahead = readahead
        decoder = try ChunkDecoder(image: image)
        chunkBuffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
    }

    deinit {
        chunkBuffer.deallocate()
    }

    /// Copies base bytes `[from, to)` out of their chunks.
    func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32 {
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
}
