import ImageOverlay
import SystemSupport
import Glibc

/// How `ImagePacker` compresses: chunk size, zstd level, worker threads.
public struct PackOptions: Sendable, Equatable {
    /// Uncompressed bytes per frame: a power of two from 4K to 8M.
    public var chunkSize: Int
    /// zstd level (libzstd's range, negative levels included).
    public var level: Int32
    /// Compression threads (1...256).
    public var threads: Int
    /// Replace an existing output file.
    public var overwrite: Bool

    public init(chunkSize: Int = ImageLayout.defaultChunkSize, level: Int32 = 3,
                threads: Int = PackOptions.onlineCPUs, overwrite: Bool = false) {
        self.chunkSize = chunkSize
        self.level = level
        self.threads = threads
        self.overwrite = overwrite
    }

    public static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    func validate() throws(ImageError) {
        try ImageLayout.validateChunkSize(chunkSize)
        guard FrameCompressor.levels.contains(level) else {
            throw .invalidArgument("level \(level) is outside \(FrameCompressor.levels)")
        }
        guard (1...256).contains(threads) else { throw .invalidArgument("threads must be 1-256, not \(threads)") }
    }
}

/// What `ImagePacker.pack` produced.
public struct PackResult: Sendable, Equatable {
    public var header: ImageHeader
    /// Bytes of the image file written.
    public var fileSize: UInt64
    /// Chunks that were all zeroes (stored as a canned frame, not compressed).
    public var zeroChunks: Int
    /// Wall-clock seconds the pack took.
    public var seconds: Double

    /// Raw bytes per image byte.
    public var ratio: Double { Double(header.logicalSize) / Double(max(fileSize, 1)) }
}
