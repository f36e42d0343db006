import SystemSupport
import BlockBackends
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

final class SpecAndCacheTests: XCTestCase {
    func testZstdBackendSpecs() throws {
        func parse(_ text: String) throws -> ZstdBackendSpec {
            let spec = try BackendSpec.parse(text)
            XCTAssertEqual(spec.kind, "zstd")
            return try ZstdBackendSpec.parse(spec.arguments)
        }
        XCTAssertEqual(try parse("zstd:/a/disk.zst"), ZstdBackendSpec(image: "/a/disk.zst", overlay: nil, cacheBytes: nil))
        XCTAssertEqual(try parse("zstd:d.zst,overlay=/o/d.ovl,cache=256M"),
                       ZstdBackendSpec(image: "d.zst", overlay: "/o/d.ovl", cacheBytes: 256 << 20))
        XCTAssertEqual(try parse("zstd:d.zst,cache=0,overlay=o"), ZstdBackendSpec(image: "d.zst", overlay: "o", cacheBytes: 0))
        for bad in ["zstd:", "zstd:,overlay=o", "zstd:d,overlay=", "zstd:d,cache=lots", "zstd:d,ovl=x",
                    "zstd:d,overlay=a,overlay=b", "zstd:d,", "zstd:d\u{0}"] {
            XCTAssertThrowsError(try parse(bad), bad)
        }
        XCTAssertEqual(ZstdBackendProvider().kinds, ["zstd"])
        // A spec opened with --size is refused before the image is touched.
        XCTAssertThrowsError(try ZstdBackendProvider().open(BackendSpec(kind: "zstd", arguments: "/nonexistent.zst"),
                                                            options: BackendOpenOptions(size: 4096))) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .invalidSpec, "\($0)")
        }
    }

    /// A FIFO as image or overlay is refused at once (it used to block in open or read).
    func testFifoImageAndOverlayAreRefusedWithoutBlocking() throws {
        let dir = try TempDir()
        let fifo = dir.file("fifo")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        XCTAssertThrowsError(try ZstdBackendFactory.open(ZstdBackendSpec(image: fifo))) { e in
            XCTAssertTrue("\(e)".contains("is a FIFO"), "\(e)")
        }
        let zst = try packImage(makeRawImage(size: 64 << 10, seed: 3), in: dir)
        XCTAssertThrowsError(try ZstdBackendFactory.open(ZstdBackendSpec(image: zst, overlay: fifo))) { e in
            XCTAssertTrue("\(e)".contains("is a FIFO"), "\(e)")
        }
    }

    func testFactoryOpenNamesTheImageInItsError() throws {
        let dir = try TempDir(label: "zstd")
        try writeFile(dir.file("junk"), [UInt8](repeating: 7, count: 4096))
        XCTAssertThrowsError(try ZstdBackendFactory.open(ZstdBackendSpec(image: dir.file("junk")))) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .image)
            XCTAssertNotNil((e as? BackendError)?.source as? ImageError)
            XCTAssertTrue("\(e)".contains("junk") && "\(e)".contains("bad magic"), "\(e)")
        }
    }

    func testCacheEvictsLeastRecentlyUsedPerShard() {
        let cache = ChunkCache(capacityBytes: 3 * 4096, chunkSize: 4096, shardCount: 1)!
        XCTAssertEqual(cache.capacityChunks, 3)
        XCTAssertNil(ChunkCache(capacityBytes: 4095, chunkSize: 4096))
        var buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
        for chunk in 0..<3 {
            buffer.storeBytes(of: UInt8(chunk), as: UInt8.self)
            cache.insert(chunk, buffer: &buffer)
        }
        var seen: UInt8 = 0xFF
        XCTAssertTrue(cache.withChunk(0) { seen = $0.load(as: UInt8.self) })  // 0 is now most recent
        XCTAssertEqual(seen, 0)
        buffer.storeBytes(of: 3, as: UInt8.self)
        cache.insert(3, buffer: &buffer)  // evicts 1, hands its buffer back
        XCTAssertEqual(buffer.load(as: UInt8.self), 1)
        XCTAssertFalse(cache.contains(1))
        XCTAssertTrue(cache.contains(0) && cache.contains(2) && cache.contains(3))
        XCTAssertTrue(cache.withChunk(3) { seen = $0.load(as: UInt8.self) })
        XCTAssertEqual(seen, 3)
        XCTAssertFalse(cache.withChunk(1) { _ in })
        let stats = cache.statistics()
        XCTAssertEqual(stats.held, 3)
        XCTAssertEqual(stats.hits, 2)
        XCTAssertEqual(stats.misses, 1)
        buffer.deallocate()
    }
}
