import ImageOverlay
import SystemSupport

/// Appends bytes to a file through a 4 MiB buffer, so many small frames cost
/// few writes. Owns the buffer; writes through the caller's `PosixFile`.
final class OutputBuffer {
    private let file: PosixFile
    private let buffer: UnsafeMutableRawPointer
    private let capacity = 4 << 20
    private var used = 0
    /// File offset where the buffered bytes go.
    private var flushedTo: UInt64

    /// Bytes appended so far, counting from `start`.
    var position: UInt64 { flushedTo + UInt64(used) }

    init(file: PosixFile, start: UInt64) {
        self.file = file
        flushedTo = start
        buffer = .allocate(byteCount: capacity, alignment: 4096)
    }

    deinit { buffer.deallocate() }

    func append(_ bytes: UnsafeRawPointer, count: Int) throws(ImageError) {
        if used + count > capacity { try flush() }
        if count >= capacity {
            try file.write(bytes, count: count, at: flushedTo)
            flushedTo += UInt64(count)
            return
        }
        (buffer + used).copyMemory(from: bytes, byteCount: count)
        used += count
    }

    func append(_ bytes: [UInt8]) throws(ImageError) {
        var failure: ImageError?
        bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress else { return }
            do throws(ImageError) { try append(base, count: b.count) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    func flush() throws(ImageError) {
        guard used > 0 else { return }
        try file.write(buffer, count: used, at: flushedTo)
        flushedTo += UInt64(used)
        used = 0
    }
}
