import ImageOverlay
import SystemSupport
import Glibc

/// Reads one chunk's frame from an image and decompresses it, checking on the
/// way that the frame is exactly as long as the seek table says, decompresses
/// to exactly the declared size (never more: the output buffer is the bound),
/// and matches the seek table checksum (via zstd's own frame checksum when
/// the frame has one, by hashing otherwise). Owns its zstd context and the
/// buffer compressed frames are read into; one thread at a time.
public final class ChunkDecoder {
    public let image: SeekableImage
    private let decompressor: FrameDecompressor
    private let frame: UnsafeMutableRawPointer
    private let frameCapacity: Int
    private let source: any ImageByteSource

    /// A decoder reading frames from `source` (by default the image's own).
    public init(image: SeekableImage, source: (any ImageByteSource)? = nil) throws(ImageError) {
        self.image = image
        self.source = source ?? image.source
        decompressor = try FrameDecompressor(chunkSize: image.chunkSize)
        frameCapacity = ImageLayout.maxFrameSize(chunkSize: image.chunkSize)
        frame = .allocate(byteCount: frameCapacity, alignment: 64)
    }

    deinit { frame.deallocate() }

    /// Decompresses chunk `index` into `output` (room for `image.chunkSize`
    /// bytes); returns its length. With `fullHash`, also returns the full XXH64
    /// of the chunk (computed, not trusted from the file).
    @discardableResult
    public func decode(_ index: Int, into output: UnsafeMutableRawPointer,
                       fullHash: Bool = false) throws(ImageError) -> (length: Int, hash: UInt64?) {
        let table = image.table
        let size = table.frameSize(index)
        guard size <= frameCapacity else {
            throw .frameSizesInconsistent("chunk \(index)'s frame is \(size) bytes")
        }
        try source.read(into: frame, count: size, at: table.offsets[index])
        let magic = loadLE32(frame, 0)
        guard magic == ImageLayout.zstdFrameMagic else {
            throw .badMagic(what: "chunk \(index)'s frame at offset \(table.offsets[index])",
                            expected: ImageLayout.zstdFrameMagic, found: magic)
        }
        let actualSize = frameCompressedSize(frame, size)
        guard actualSize == size else {
            let what = actualSize < 0 ? "not a complete frame" : "\(actualSize) bytes"
            throw .frameSizesInconsistent("chunk \(index): the seek table says \(size) bytes, the frame is \(what)")
        }
        let expected = image.header.chunkLength(index)
        let content = frameContentSize(frame, size)
        if let content, content > UInt64(expected) {
            throw .chunkTooLarge(chunk: index, size: content, limit: UInt64(expected))
        }
        let produced: Int
        switch decompressor.decompress(frame, count: size, into: output, capacity: expected) {
        case .produced(let n): produced = n
        case .outputTooSmall:
            throw .chunkTooLarge(chunk: index, size: nil, limit: UInt64(expected))
        case .checksumWrong:
            let stored = UInt64(loadLE32(frame, size - 4))
            let actual = UInt64(UInt32(truncatingIfNeeded: XXH64.hash(UnsafeRawBufferPointer(start: output, count: expected))))
            throw .checksumMismatch(what: "chunk \(index) (zstd frame checksum)", expected: stored, actual: actual)
        case .failed(let reason):
            throw .corruptFrame(chunk: index, reason: reason)
        }
        guard produced == expected else {
            throw .frameSizesInconsistent("chunk \(index) decompressed to \(produced) bytes, \(expected) declared")
        }
        let stored = table.checksums[index]
        // Frame header descriptor bit 2: zstd has already verified the content
        // against the checksum in the frame's last 4 bytes.
        let frameChecksummed = frame.load(fromByteOffset: 4, as: UInt8.self) & 0x04 != 0
        var full: UInt64?
        if fullHash || !frameChecksummed {
            let h = XXH64.hash(UnsafeRawBufferPointer(start: output, count: produced))
            full = fullHash ? h : nil
            if UInt32(truncatingIfNeeded: h) != stored {
                throw .checksumMismatch(what: "chunk \(index)", expected: UInt64(stored),
                                        actual: UInt64(UInt32(truncatingIfNeeded: h)))
            }
        } else {
            let inFrame = loadLE32(frame, size - 4)
            if inFrame != stored {
                throw .checksumMismatch(what: "chunk \(index)", expected: UInt64(stored), actual: UInt64(inFrame))
            }
        }
        return (produced, full)
    }
}
