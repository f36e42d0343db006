import SystemSupport
import Foundation
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

final class PackTests: XCTestCase {
    func testPackThenStockZstdRestoresTheRawImage() throws {
        try XCTSkipUnless(haveZstdCLI(), "zstd CLI not installed")
        let dir = try TempDir(label: "zstd")
        // Not a multiple of the chunk size: the last chunk is short.
        let raw = makeRawImage(size: 300_000 + 123, seed: 1)
        let image = try packImage(raw, in: dir, options: PackOptions(chunkSize: 16384, level: 3, threads: 3))
        let restored = dir.file("restored.raw")
        let result = try runTool(["zstd", "-q", "-d", image, "-o", restored])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(try readFile(restored) == raw)
    }

    func testPackThenUnpackAndVerify() throws {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: 256 << 10, seed: 2)
        let image = try packImage(raw, in: dir)
        let report = try ImageVerifier.verify(path: image)
        XCTAssertEqual(report.chunks, 64)
        XCTAssertEqual(report.logicalSize, UInt64(raw.count))
        let out = dir.file("out.raw")
        _ = try ImageVerifier.unpack(path: image, output: out)
        XCTAssertTrue(try readFile(out) == raw)
        let info = try ImageInfo.read(path: image)
        XCTAssertEqual(info.chunkCount, 64)
        XCTAssertEqual(info.contentDigest, report.contentDigest)
        XCTAssertGreaterThan(info.ratio, 1.5)
    }

    func testSameImageWhateverTheThreadCount() throws {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: 200_000, seed: 3)
        let one = try packImage(raw, in: dir, name: "one", options: PackOptions(chunkSize: 4096, level: 5, threads: 1))
        let many = try packImage(raw, in: dir, name: "many", options: PackOptions(chunkSize: 4096, level: 5, threads: 4))
        XCTAssertTrue(try readFile(one) == readFile(many))
    }

    func testZeroChunksAreCheapAndCounted() throws {
        let dir = try TempDir(label: "zstd")
        var raw = [UInt8](repeating: 0, count: 1 << 20)
        raw[5000] = 1
        let rawPath = dir.file("z.raw")
        try writeFile(rawPath, raw)
        let result = try ImagePacker.pack(raw: rawPath, output: dir.file("z.zst"),
                                          options: PackOptions(chunkSize: 65536, level: 19, threads: 2))
        XCTAssertEqual(result.zeroChunks, 15)
        XCTAssertLessThan(result.fileSize, 2048)
        XCTAssertEqual(try ImageVerifier.verify(path: dir.file("z.zst")).chunks, 16)
    }

    func testRefusesBadOptionsAndExistingOutput() throws {
        let dir = try TempDir(label: "zstd")
        let image = try packImage(makeRawImage(size: 8192, seed: 4), in: dir)
        let raw = dir.file("disk.raw")
        assertImageError(try ImagePacker.pack(raw: raw, output: image), { if case .invalidArgument = $0 { return true }; return false })
        for options in [PackOptions(chunkSize: 5000), PackOptions(chunkSize: 2048), PackOptions(chunkSize: 16 << 20),
                        PackOptions(level: 99), PackOptions(threads: 0)] {
            var o = options
            o.overwrite = true
            assertImageError(try ImagePacker.pack(raw: raw, output: image, options: o),
                             { if case .invalidArgument = $0 { return true }; return false })
        }
        try writeFile(dir.file("empty.raw"), [])
        assertImageError(try ImagePacker.pack(raw: dir.file("empty.raw"), output: dir.file("e.zst")),
                         { if case .invalidArgument = $0 { return true }; return false })
    }
}
