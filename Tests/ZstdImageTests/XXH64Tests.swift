import SystemSupport
import CZstd
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

final class XXH64Tests: XCTestCase {
    func testKnownVectors() {
        XCTAssertEqual(XXH64.hash([UInt8]()), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(XXH64.hash(Array("a".utf8)), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(XXH64.hash(Array("abc".utf8)), 0x44BC_2CF5_AD77_0999)
        XCTAssertEqual(XXH64.hash(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x0B24_2D36_1FDA_71BC)
        XCTAssertEqual(XXH64.empty, XXH64.hash([UInt8]()))
    }

    /// zstd ends every checksummed frame with the low 32 bits of XXH64 of its content.
    func testMatchesZstdFrameChecksums() throws {
        var rng = TestRandom(seed: 7)
        let compressor = try FrameCompressor(level: 1)
        for length in [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 1000, 4096, 65537] {
            let data = rng.bytes(length)
            var frame = [UInt8](repeating: 0, count: ZSTD_compressBound(length) + 64)
            let size = try data.withUnsafeBytes { src in
                try frame.withUnsafeMutableBytes { dst in
                    try compressor.compress(src.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: length,
                                            into: dst.baseAddress!, capacity: dst.count)
                }
            }
            let stored = UInt32(frame[size - 4]) | UInt32(frame[size - 3]) << 8
                | UInt32(frame[size - 2]) << 16 | UInt32(frame[size - 1]) << 24
            XCTAssertEqual(stored, UInt32(truncatingIfNeeded: XXH64.hash(data)), "length \(length)")
        }
    }

    func testStreamingMatchesOneShot() {
        var rng = TestRandom(seed: 9)
        let data = rng.bytes(1000)
        for split in [0, 1, 5, 31, 32, 33, 64, 500, 999, 1000] {
            var state = XXH64.State(seed: 42)
            data[0..<split].withUnsafeBytes { state.update($0) }
            data[split...].withUnsafeBytes { state.update($0) }
            XCTAssertEqual(state.digest(), XXH64.hash(data, seed: 42), "split \(split)")
        }
        var byWords = XXH64.State()
        var bytes: [UInt8] = []
        for v: UInt64 in [1, 0xDEAD_BEEF, 3, 4, 5] {
            byWords.update(v)
            withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        }
        XCTAssertEqual(byWords.digest(), XXH64.hash(bytes))
    }
}
