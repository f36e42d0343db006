import BlockBackends
import FuzzHarness
import XCTest
import ZstdImage

/// Replays the committed seed corpora and every input a fuzzer ever flagged
/// (Fuzz/regressions/TARGET/) through the same harnesses and invariant checks
/// the libFuzzer binaries use. A violated invariant traps, failing the run.
final class FuzzRegressionTests: XCTestCase {
    static let root: String = {
        var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)                                   // Tests/FuzzRegressionTests/<file>
        return parts.joined(separator: "/")
    }()

    func replay(_ target: String, _ body: (UnsafeRawBufferPointer) -> Void, minimum: Int = 1) {
        var count = 0
        for folder in ["Fuzz/corpus/\(target)", "Fuzz/regressions/\(target)"] {
            let path = Self.root + "/" + folder
            guard FileManager.default.fileExists(atPath: path) else { continue }
            for file in FuzzMain.files(path) {
                guard let bytes = FuzzMain.readFile(file) else { return XCTFail("cannot read \(file)") }
                bytes.withUnsafeBytes { body($0) }
                count += 1
            }
        }
        XCTAssertGreaterThanOrEqual(count, minimum, "no inputs for \(target)")
    }

    func testQueueCorpusAndFindings() { replay("queue", QueueFuzzer.run) }
    func testControlCorpusAndFindings() { replay("control", ControlFuzzer.run) }
    func testParseCorpusAndFindings() { replay("parse", ParseFuzzer.run) }
    func testZstdCorpusAndFindings() { replay("zstd", ZstdImageFuzzer.run) }

    // MARK: findings, spelled out

    /// fuzz-parse, Fuzz/regressions/parse/backendspec-combining-mark-after-separator:
    /// a path starting with a combining mark fused with the ':' / ',' / '=' before
    /// it (Characters are grapheme clusters), so valid specs were refused.
    func testBackendSpecPathsStartingWithCombiningMarks() throws {
        XCTAssertEqual(try BackendSpec.parse("file:\u{301}disk.img"), .file(path: "\u{301}disk.img"))
        XCTAssertEqual(try BackendSpec.parse("zstd:\u{325}a.zst,overlay=\u{325}o,cache=64K"),
                       .zstd(image: "\u{325}a.zst", overlay: "\u{325}o", cacheBytes: 65536))
        // The separators themselves must still be exact.
        XCTAssertThrowsError(try BackendSpec.parse("file\u{301}:disk.img"))
        XCTAssertThrowsError(try BackendSpec.parse("zstd:a.zst,\u{301}overlay=o"))
    }

    /// fuzz-zstd, Fuzz/regressions/zstd/header-logical-size-near-uint64-max:
    /// a header (with a correct checksum: anyone can compute XXH64) declaring a
    /// logical size near UInt64.max overflowed `logical + chunk - 1` in
    /// `ImageHeader.decode`, a trap that took down whoever opened the image.
    func testImageHeaderWithHugeLogicalSizeIsRefusedNotATrap() {
        for logical in [UInt64.max, UInt64.max - 4095, UInt64(Int64.max) + 1] {
            var frame = ImageHeader(logicalSize: 1 << 20, chunkSize: 4096, level: 3, contentDigest: 0).encodedFrame()
            withUnsafeBytes(of: logical.littleEndian) { for i in 0..<8 { frame[24 + i] = $0[i] } }
            let sum = XXH64.hash(Array(frame[8..<(ImageHeader.frameSize - 8)]))
            withUnsafeBytes(of: sum.littleEndian) { for i in 0..<8 { frame[ImageHeader.frameSize - 8 + i] = $0[i] } }
            XCTAssertThrowsError(try ImageHeader.decode(frame), "logical size \(logical)")
        }
        XCTAssertEqual(ImageHeader(logicalSize: .max, chunkSize: 4096, level: 3, contentDigest: 0).chunkCount, 1 << 52)
    }
}
