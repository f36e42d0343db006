import ImageOverlay
import SystemSupport

/// Where the bytes of a zstd seekable image come from: a local file, or a
/// remote object seen through a cache. Reads are exact (`count` bytes at
/// `offset` or an error); a source that cannot serve a range without waiting
/// (a remote chunk not cached yet) throws `.io(errno: EAGAIN)`.
public protocol ImageByteSource: AnyObject, Sendable {
    /// Bytes in the image file or object.
    var byteCount: UInt64 { get }
    /// A name for messages (a path or a URL).
    var sourceName: String { get }
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws(ImageError)
}

extension ImageByteSource {
    /// Reads `count` bytes at `offset` into a new array.
    func readBytes(count: Int, at offset: UInt64) throws(ImageError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: ImageError?
        bytes.withUnsafeMutableBytes { b in
            guard let base = b.baseAddress else { return }
            do throws(ImageError) { try read(into: base, count: count, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }
}

/// A local image file as an `ImageByteSource`.
final class FileByteSource: ImageByteSource {
    let file: PosixFile
    let byteCount: UInt64
    var sourceName: String { file.path }

    init(file: PosixFile) throws(ImageError) {
        self.file = file
        byteCount = try file.size()
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws(ImageError) {
        try file.read(into: buffer, count: count, at: offset)
    }
}
