import ImageOverlay
import SystemSupport
import Glibc
import ZstdImage

/// Fuzz target "zstd": image files for `SeekableImage.open` (header frame,
/// seek table footer and frame, every size and bound) and `ChunkDecoder`
/// (frame magic, exact frame size, content size, decompression into a buffer
/// of exactly one chunk, checksums). The first byte holds flags, the rest is
/// the file. Unless flag bit 0 is set, the harness rewrites the header's XXH64
/// so mutations get past the checksum and reach the fields behind it.
/// Checks: no crash (ASan watches the one-chunk output buffer); an image that
/// opens has a self-consistent header and seek table (chunk count, strictly
/// increasing frame offsets from the header's end to the seek table); a chunk
/// that decodes has exactly the length the header implies; the header
/// round-trips through `encodedFrame()`.
public enum ZstdImageFuzzer {
    static let path: String = {
        var template = Array((access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp").utf8CString.dropLast())
            + Array("/vduse-blk-fuzz-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        precondition(fd >= 0, "mkstemp failed")
        close(fd)
        let p = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        atexit_path = strdup(p)
        atexit { if let p = atexit_path { unlink(p) } }
        return p
    }()

    public static func run(_ data: UnsafeRawBufferPointer) {
        guard data.count >= 1 else { return }
        let flags = data[0]
        var bytes = Array(data[1...])
        let frameSize = ImageHeader.frameSize
        if flags & 1 == 0, bytes.count >= frameSize {
            let sum = XXH64.hash(Array(bytes[8..<(frameSize - 8)]))
            withUnsafeBytes(of: sum.littleEndian) { for i in 0..<8 { bytes[frameSize - 8 + i] = $0[i] } }
        }
        if let header = try? ImageHeader.decode(Array(bytes.prefix(frameSize))) {
            fuzzCheck((try? ImageHeader.decode(header.encodedFrame())) == header, "header does not round-trip")
        }
        guard write(bytes) else { return }
        guard let image = try? SeekableImage.open(path: path) else { return }
        let header = image.header
        let table = image.table
        fuzzCheck(header.chunkCount > 0 && UInt64(header.chunkCount) * UInt64(header.chunkSize) >= header.logicalSize
                  && UInt64(header.chunkCount - 1) * UInt64(header.chunkSize) < header.logicalSize,
                  "\(header.chunkCount) chunks of \(header.chunkSize) for \(header.logicalSize) bytes")
        fuzzCheck(table.offsets.count == header.chunkCount + 1 && table.checksums.count == header.chunkCount,
                  "seek table has \(table.offsets.count) offsets for \(header.chunkCount) chunks")
        fuzzCheck(table.offsets.first == UInt64(frameSize), "first frame at \(table.offsets.first ?? 0)")
        for i in 0..<header.chunkCount {
            fuzzCheck(table.offsets[i] < table.offsets[i + 1], "frame \(i) is empty or backwards")
        }
        fuzzCheck(table.offsets.last! < image.fileSize, "frames run past the file")
        guard flags & 2 == 0, let decoder = try? ChunkDecoder(image: image) else { return }
        let output = UnsafeMutableRawPointer.allocate(byteCount: image.chunkSize, alignment: 64)
        defer { output.deallocate() }
        for i in 0..<min(header.chunkCount, 8) {
            let result = Result { () throws(ImageError) in try decoder.decode(i, into: output, fullHash: flags & 4 != 0) }
            if QueueFuzzer.trace { print("chunk \(i): \(result)") }
            if case .success(let (length, hash)) = result {
                fuzzCheck(length == header.chunkLength(i), "chunk \(i) decoded to \(length), not \(header.chunkLength(i))")
                fuzzCheck((hash != nil) == (flags & 4 != 0), "full hash \(hash == nil ? "missing" : "unasked")")
            }
        }
    }

    static func write(_ bytes: [UInt8]) -> Bool {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

nonisolated(unsafe) private var atexit_path: UnsafeMutablePointer<CChar>?
