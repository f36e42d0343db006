import ImageOverlay
import SystemSupport

/// The image header: the payload of the skippable frame that opens every
/// image (stock zstd skips it). Says how big the raw image is, how it is
/// chunked, and what its content digest is. Owns nothing; a value.
public struct ImageHeader: Sendable, Equatable {
    public static let tag: [UInt8] = Array("VBZSTDIM".utf8)
    public static let version: UInt16 = 1
    /// Bytes of the payload (after the 8-byte skippable frame header).
    public static let payloadSize = 64
    /// Bytes of the whole header frame.
    public static let frameSize = ImageLayout.skippableHeaderSize + payloadSize

    /// Bytes of the raw image.
    public var logicalSize: UInt64
    /// Uncompressed bytes per data frame (the last may be shorter).
    public var chunkSize: Int
    /// The zstd level the image was packed with (informational).
    public var level: Int32
    /// XXH64 over the little-endian XXH64 of every chunk, in order.
    public var contentDigest: UInt64

    public init(logicalSize: UInt64, chunkSize: Int, level: Int32, contentDigest: UInt64) {
        self.logicalSize = logicalSize
        self.chunkSize = chunkSize
        self.level = level
        self.contentDigest = contentDigest
    }

    /// Number of data frames (chunks).
    public var chunkCount: Int {
        // Rounded up without `logicalSize + chunkSize - 1`, which overflows near UInt64.max.
        Int(logicalSize / UInt64(chunkSize) + (logicalSize % UInt64(chunkSize) == 0 ? 0 : 1))
    }

    /// Uncompressed bytes of chunk `index`.
    public func chunkLength(_ index: Int) -> Int {
        let start = UInt64(index) * UInt64(chunkSize)
        return Int(min(UInt64(chunkSize), logicalSize - start))
    }

    /// The whole header frame.
    public func encodedFrame() -> [UInt8] {
        var w = ByteWriter(capacity: Self.frameSize)
        w.u32(ImageLayout.headerFrameMagic)
        w.u32(UInt32(Self.payloadSize))
        w.raw(Self.tag)
        w.u16(Self.version)
        w.u16(UInt16(Self.payloadSize))
        w.u32(0)  // flags
        w.u64(logicalSize)
        w.u32(UInt32(chunkSize))
        w.u32(UInt32(bitPattern: level))
        w.u32(UInt32(chunkCount))
        w.u32(0)
        w.u64(contentDigest)
        w.u64(0)
        let checksum = XXH64.hash(Array(w.bytes[ImageLayout.skippableHeaderSize...]))
        w.u64(checksum)
        return w.bytes
    }

    /// Parses and validates a header frame (exactly `frameSize` bytes from offset 0).
    public static func decode(_ frame: [UInt8]) throws(ImageError) -> ImageHeader {
        var r = ByteReader(frame)
        guard frame.count >= frameSize, let magic = r.u32(), let size = r.u32() else {
            throw .truncated("the file is too short for the \(frameSize)-byte image header")
        }
        if magic == ImageLayout.zstdFrameMagic {
            throw .badHeader("a plain zstd stream without the vduse-blk image header (pack it with `vduse-blk image pack`)")
        }
        guard magic == ImageLayout.headerFrameMagic else {
            throw .badMagic(what: "image header frame at offset 0", expected: ImageLayout.headerFrameMagic, found: magic)
        }
        guard size == UInt32(payloadSize) else {
            throw .badHeader("header frame holds \(size) bytes, expected \(payloadSize)")
        }
        let checked = Array(frame[ImageLayout.skippableHeaderSize..<(frameSize - 8)])
        guard let tag = r.take(8), tag == Self.tag else {
            throw .badHeader("missing the VBZSTDIM tag")
        }
        let version = r.u16()!, declared = r.u16()!, flags = r.u32()!
        let logical = r.u64()!, chunk = r.u32()!, level = r.u32()!, count = r.u32()!
        _ = r.u32()
        let digest = r.u64()!
        _ = r.u64()
        let stored = r.u64()!
        let computed = XXH64.hash(checked)
        guard stored == computed else {
            throw .checksumMismatch(what: "image header", expected: stored, actual: computed)
        }
        guard version == Self.version else { throw .unsupported("image format version \(version)") }
        guard declared == UInt16(payloadSize), flags == 0 else {
            throw .unsupported("header size \(declared) or flags \(hex32(flags)) of a newer format")
        }
        do { try ImageLayout.validateChunkSize(Int(chunk)) } catch {
            throw .badHeader("chunk size \(chunk) is not a power of two from 4K to 8M")
        }
        guard logical > 0 else { throw .badHeader("the image is empty") }
        let header = ImageHeader(logicalSize: logical, chunkSize: Int(chunk), level: Int32(bitPattern: level),
                                 contentDigest: digest)
        // (Hostile sizes near UInt64.max must not overflow the rounding up.)
        guard UInt64(count) == logical / UInt64(chunk) + (logical % UInt64(chunk) == 0 ? 0 : 1),
              Int(count) < ImageLayout.maxFrames else {
            throw .badHeader("\(count) chunks cannot hold \(logical) bytes in chunks of \(chunk)")
        }
        return header
    }
}
