import SystemSupport
import BlockBackends
import CZstd
import Glibc
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// Every way an image can be damaged is refused with an error naming it,
/// at open time when the header and seek table show it, or when the chunk
/// is read (verify, unpack, or the backend, which fails the read with EIO).
final class CorruptionTests: XCTestCase {
    private var dir: TempDir!
    private var good: [UInt8] = []
    private var raw: [UInt8] = []
    private let chunk = 4096
    private let chunks = 16

    override func setUpWithError() throws {
        dir = try TempDir(label: "zstd")
        raw = makeRawImage(size: chunk * chunks, seed: 31)
        raw.replaceSubrange(0..<chunk, with: [UInt8](repeating: 0x41, count: chunk))  // chunk 0 compressible
        good = try readFile(try packImage(raw, in: dir, name: "good"))
    }

    // Offsets in `good`.
    private var tableBytes: Int { 8 + 12 * (chunks + 1) + 9 }
    private var tableStart: Int { good.count - tableBytes }
    /// Offset of seek table entry `i` (0: the header frame; chunk k is k + 1).
    private func entry(_ i: Int) -> Int { tableStart + 8 + 12 * i }
    private func frameOffset(_ k: Int) -> Int {
        var offset = ImageHeader.frameSize
        for j in 0..<k { offset += Int(le32(good, entry(j + 1))) }
        return offset
    }

    private func le32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    private func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    private func save(_ bytes: [UInt8], _ name: String = "bad.zst") throws -> String {
        let path = dir.file(name)
        try writeFile(path, bytes)
        return path
    }

    private func openError(_ bytes: [UInt8], _ predicate: (ImageError) -> Bool,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try save(bytes)
        assertImageError(try SeekableImage.open(path: path), predicate, file: file, line: line)
        assertImageError(try ImageVerifier.verify(path: path), predicate, file: file, line: line)
        assertImageError(try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: path)), predicate,
                         file: file, line: line)
    }

    /// Opens fine, but reading chunk `k` fails with `predicate`: verify,
    /// unpack and the backend (EIO) all refuse it; other chunks still read.
    private func readError(_ bytes: [UInt8], chunk k: Int, _ predicate: (ImageError) -> Bool,
                           file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try save(bytes)
        let image = try SeekableImage.open(path: path)
        let decoder = try ChunkDecoder(image: image)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buffer.deallocate() }
        assertImageError(try decoder.decode(k, into: buffer), predicate, file: file, line: line)
        assertImageError(try ImageVerifier.verify(path: path), predicate, file: file, line: line)
        assertImageError(try ImageVerifier.unpack(path: path, output: dir.file("out.raw")), predicate,
                         file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.file("out.raw")), file: file, line: line)
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: path, cacheBytes: 0))
        let queue = try QueueDriver(factory, depth: 4)
        XCTAssertEqual(queue.read(UInt64(k * chunk + 512), 512).result, -EIO, file: file, line: line)
        let other = k == 0 ? 1 : 0
        let (result, bytes) = queue.read(UInt64(other * chunk), chunk)
        XCTAssertEqual(result, Int32(chunk), file: file, line: line)
        XCTAssertTrue(sameBytes(bytes, 0, raw, other * chunk, chunk), file: file, line: line)
    }

    func testGoodImageOpens() throws {
        let image = try SeekableImage.open(path: try save(good))
        XCTAssertEqual(image.chunkCount, chunks)
        XCTAssertEqual(image.table.offsets[3], UInt64(frameOffset(3)))
    }

    func testTruncatedImagesAreRefused() throws {
        try openError(Array(good[0..<50]), { if case .truncated = $0 { return true }; return false })
        try openError(Array(good.dropLast()), { if case .badMagic(let what, _, _) = $0 { return what.contains("footer") }; return false })
        try openError(Array(good[0..<(good.count / 2)]), { if case .badMagic = $0 { return true }; return false })
        // Cut out of the middle, the footer intact: the frames no longer add up.
        var middle = good
        middle.removeSubrange(frameOffset(5)..<frameOffset(5) + 10)
        try openError(middle, { if case .frameSizesInconsistent = $0 { return true }; return false })
    }

    func testFlippedMagicsAreRefused() throws {
        var header = good
        header[0] ^= 0xFF
        try openError(header, { if case .badMagic(let what, _, _) = $0 { return what.contains("header") }; return false })
        var footer = good
        footer[good.count - 1] ^= 0x10
        try openError(footer, { if case .badMagic(let what, _, _) = $0 { return what.contains("footer") }; return false })
        var table = good
        table[tableStart] ^= 0x01
        try openError(table, { if case .badMagic(let what, _, _) = $0 { return what.contains("seek table frame") }; return false })
        var frame = good
        frame[frameOffset(4)] ^= 0x01
        try readError(frame, chunk: 4, { if case .badMagic(let what, _, _) = $0 { return what.contains("chunk 4") }; return false })
    }

    func testHeaderDamageIsRefused() throws {
        var digest = good
        digest[8 + 40] ^= 0x01  // content digest byte: the header checksum catches it
        try openError(digest, { if case .checksumMismatch(let what, _, _) = $0 { return what == "image header" }; return false })
        let plain = dir.file("plain.zst")
        try writeFile(dir.file("plain.raw"), raw)
        if haveZstdCLI() {
            XCTAssertEqual(try runTool(["zstd", "-q", dir.file("plain.raw"), "-o", plain]).status, 0)
            assertImageError(try SeekableImage.open(path: plain),
                             { if case .badHeader(let s) = $0 { return s.contains("plain zstd") }; return false })
        }
        var reserved = good
        reserved[good.count - 5] |= 0x04
        try openError(reserved, { if case .unsupported = $0 { return true }; return false })
    }

    func testSeekTablePastTheFileIsRefused() throws {
        var huge = good
        put32(&huge, good.count - 9, 0x07FF_FFFF)
        try openError(huge, { if case .seekTableOutOfBounds = $0 { return true }; return false })
        var beyond = good
        put32(&beyond, good.count - 9, UInt32(good.count / 12))
        try openError(beyond, { if case .seekTableOutOfBounds = $0 { return true }; return false })
        var tooMany = good
        put32(&tooMany, good.count - 9, 0x0900_0000)  // over the format's frame limit
        try openError(tooMany, { if case .seekTableOutOfBounds = $0 { return true }; return false })
        var fewer = good
        put32(&fewer, good.count - 9, UInt32(chunks))  // one entry short of the header's count
        try openError(fewer, { if case .frameSizesInconsistent = $0 { return true }; return false })
    }

    func testFrameSizesInconsistentWithTheFileAreRefused() throws {
        var grown = good
        put32(&grown, entry(3), le32(good, entry(3)) + 1)
        try openError(grown, { if case .frameSizesInconsistent = $0 { return true }; return false })
        var huge = good
        put32(&huge, entry(3), 0xFFFF_FF00)
        try openError(huge, { if case .frameSizesInconsistent = $0 { return true }; return false })
        // Sizes still add up, but chunk 2's frame is not where or as long as the table says.
        var shifted = good
        put32(&shifted, entry(3), le32(good, entry(3)) + 1)
        put32(&shifted, entry(4), le32(good, entry(4)) - 1)
        try readError(shifted, chunk: 2, { if case .frameSizesInconsistent = $0 { return true }; return false })
        var lastShort = good
        put32(&lastShort, entry(chunks), le32(good, entry(chunks)) - 1)
        try openError(lastShort, { if case .frameSizesInconsistent = $0 { return true }; return false })
    }

    func testChunkLargerThanDeclaredIsRefused() throws {
        // The table declares more than the chunk size.
        var declared = good
        put32(&declared, entry(2) + 4, UInt32(chunk + 512))
        try openError(declared, { if case .chunkTooLarge = $0 { return true }; return false })
        // A frame that really holds twice the chunk, with and without a content size in its header.
        for contentSize in [true, false] {
            let big = [UInt8](repeating: 0x33, count: 2 * chunk)
            let frame = try compress(big, contentSize: contentSize)
            var image = Array(good[0..<frameOffset(5)]) + frame + Array(good[frameOffset(6)...])
            put32(&image, entry(6) + frame.count - Int(le32(good, entry(6))), UInt32(frame.count))
            try readError(image, chunk: 5, { if case .chunkTooLarge(let c, _, _) = $0 { return c == 5 }; return false })
        }
    }

    func testChecksumMismatchIsRefused() throws {
        var table = good
        put32(&table, entry(7) + 8, le32(good, entry(7) + 8) ^ 0x8000)
        try readError(table, chunk: 6, { if case .checksumMismatch(let what, _, _) = $0 { return what.contains("chunk 6") }; return false })
        // A flipped bit inside compressed data: zstd or the checksum catches it.
        var data = good
        let k = 0  // the compressible chunk: a literal-free frame whose corruption zstd may not see itself
        data[frameOffset(k) + Int(le32(good, entry(k + 1))) - 6] ^= 0x01
        try readError(data, chunk: k, {
            switch $0 {
            case .checksumMismatch, .corruptFrame: return true
            default: return false
            }
        })
    }

    private func compress(_ bytes: [UInt8], contentSize: Bool) throws -> [UInt8] {
        let cctx = try XCTUnwrap(ZSTD_createCCtx())
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, contentSize ? 1 : 0)
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count) + 64)
        let size: Int
        if contentSize {
            size = out.withUnsafeMutableBytes { o in
                bytes.withUnsafeBytes { ZSTD_compress2(cctx, o.baseAddress, o.count, $0.baseAddress, $0.count) }
            }
        } else {
            // Streaming without a pledged size: the header carries no content size.
            size = out.withUnsafeMutableBytes { o in
                bytes.withUnsafeBytes { i in
                    var input = ZSTD_inBuffer(src: i.baseAddress, size: i.count, pos: 0)
                    var output = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                    let rc = ZSTD_compressStream2(cctx, &output, &input, ZSTD_e_end)
                    return rc == 0 ? output.pos : -1
                }
            }
        }
        XCTAssertGreaterThan(size, 0)
        XCTAssertEqual(ZSTD_getFrameContentSize(out, size) != UInt64.max, contentSize)
        return Array(out[0..<size])
    }
}
