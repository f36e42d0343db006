import ImageOverlay
import SystemSupport
import CZstd

/// libzstd's name for an error code.
func zstdErrorName(_ code: Int) -> String {
    String(cString: ZSTD_getErrorName(code))
}

/// One libzstd compression context set up for image frames: the given level,
/// the content size in every frame header, and zstd's own XXH64 content
/// checksum at the end of every frame. Owns the context; one thread at a time.
final class FrameCompressor {
    private let context: OpaquePointer

    init(level: Int32) throws(ImageError) {
        guard let context = ZSTD_createCCtx() else { throw .compression("cannot allocate a compression context") }
        self.context = context
        for (parameter, value) in [(ZSTD_c_compressionLevel, level), (ZSTD_c_checksumFlag, 1),
                                   (ZSTD_c_contentSizeFlag, 1)] {
            let rc = ZSTD_CCtx_setParameter(context, parameter, value)
            if ZSTD_isError(rc) != 0 {
                ZSTD_freeCCtx(context)
                throw .compression("level \(level): \(zstdErrorName(rc))")
            }
        }
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses `count` bytes into one frame at `output` (capacity at least
    /// `ZSTD_compressBound(count)`); returns the frame's size.
    func compress(_ input: UnsafeRawPointer, count: Int, into output: UnsafeMutableRawPointer,
                  capacity: Int) throws(ImageError) -> Int {
        let rc = ZSTD_compress2(context, output, capacity, input, count)
        if ZSTD_isError(rc) != 0 { throw .compression(zstdErrorName(rc)) }
        return rc
    }

    /// The levels libzstd accepts.
    static var levels: ClosedRange<Int32> { ZSTD_minCLevel()...ZSTD_maxCLevel() }
}

/// One libzstd decompression context that refuses windows larger than a
/// chunk, so a hostile frame cannot make it allocate more. Owns the context;
/// one thread at a time.
final class FrameDecompressor {
    private let context: OpaquePointer

    init(chunkSize: Int) throws(ImageError) {
        guard let context = ZSTD_createDCtx() else { throw .io(what: "allocating a zstd context", errno: 12) }
        self.context = context
        var log: Int32 = 10
        while (1 << log) < chunkSize { log += 1 }
        let rc = ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, log)
        if ZSTD_isError(rc) != 0 {
            ZSTD_freeDCtx(context)
            throw .unsupported("window log \(log): \(zstdErrorName(rc))")
        }
    }

    deinit { ZSTD_freeDCtx(context) }

    /// Result of one frame: bytes produced, or libzstd's error code.
    enum Outcome {
        case produced(Int)
        case outputTooSmall
        case checksumWrong
        case failed(String)
    }

    func decompress(_ input: UnsafeRawPointer, count: Int, into output: UnsafeMutableRawPointer,
                    capacity: Int) -> Outcome {
        let rc = ZSTD_decompressDCtx(context, output, capacity, input, count)
        if ZSTD_isError(rc) == 0 { return .produced(rc) }
        switch ZSTD_getErrorCode(rc) {
        case ZSTD_error_dstSize_tooSmall: return .outputTooSmall
        case ZSTD_error_checksum_wrong: return .checksumWrong
        default: return .failed(zstdErrorName(rc))
        }
    }
}

/// Bytes of the zstd frame starting at `p` (at most `count`), or -1 when the
/// bytes are not one complete frame.
func frameCompressedSize(_ p: UnsafeRawPointer, _ count: Int) -> Int {
    let rc = ZSTD_findFrameCompressedSize(p, count)
    return ZSTD_isError(rc) != 0 ? -1 : rc
}

/// The content size a frame header declares, or nil when absent or unreadable.
func frameContentSize(_ p: UnsafeRawPointer, _ count: Int) -> UInt64? {
    let size = ZSTD_getFrameContentSize(p, count)
    // ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR.
    return size >= UInt64.max - 1 ? nil : size
}
