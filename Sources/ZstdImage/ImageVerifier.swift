import ImageOverlay
import SystemSupport
import Glibc

/// What a full pass over an image found (it throws on the first problem instead).
public struct VerifyReport: Sendable, Equatable {
    public var chunks: Int
    public var logicalSize: UInt64
    public var contentDigest: UInt64
    public var seconds: Double
}

/// Reads every chunk of an image: each frame must decompress to its declared
/// size and match its seek-table checksum, and the chunk hashes must add up
/// to the header's content digest. `unpack` does the same while writing the
/// raw image out (sparse: all-zero chunks are skipped, not written).
public enum ImageVerifier {
    /// Checks every chunk of the image at `path`.
    public static func verify(path: String, progress: ((UInt64, UInt64) -> Void)? = nil)
        throws(ImageError) -> VerifyReport
    {
        try scan(path: path, progress: progress) { _, _, _ throws(ImageError) in }
    }

    /// Decompresses the image at `path` into a raw image at `output`.
    public static func unpack(path: String, output: String, overwrite: Bool = false,
                              progress: ((UInt64, UInt64) -> Void)? = nil) throws(ImageError) -> VerifyReport {
        if access(output, F_OK) == 0 && !overwrite {
            throw .invalidArgument("\(output) exists (overwrite it with --force)")
        }
        let partial = output + ".partial"
        let out = try PosixFile.open(partial, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do throws(ImageError) {
            let report = try scan(path: path, progress: progress) { offset, chunk, length throws(ImageError) in
                if !isAllZero(chunk, length) { try out.write(chunk, count: length, at: offset) }
            }
            try out.truncate(to: report.logicalSize)
            try out.sync()
            try PosixFile.rename(partial, to: output)
            try PosixFile.syncDirectory(of: output)
            return report
        } catch {
            unlink(partial)
            throw error
        }
    }

    private static func scan(path: String, progress: ((UInt64, UInt64) -> Void)?,
                             _ body: (UInt64, UnsafeRawPointer, Int) throws(ImageError) -> Void)
        throws(ImageError) -> VerifyReport
    {
        let started = monotonicSeconds()
        let image = try SeekableImage.open(path: path)
        let decoder = try ChunkDecoder(image: image)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: image.chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var digest = XXH64.State()
        for i in 0..<image.chunkCount {
            let (length, hash) = try decoder.decode(i, into: buffer, fullHash: true)
            digest.update(hash ?? 0)
            try body(image.chunkStart(i), buffer, length)
            progress?(image.chunkStart(i) + UInt64(length), image.logicalSize)
        }
        let computed = digest.digest()
        guard computed == image.header.contentDigest else {
            throw .checksumMismatch(what: "content digest", expected: image.header.contentDigest, actual: computed)
        }
        return VerifyReport(chunks: image.chunkCount, logicalSize: image.logicalSize, contentDigest: computed,
                            seconds: monotonicSeconds() - started)
    }
}
