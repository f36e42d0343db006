import ImageOverlay
import SystemSupport
import BlockBackends
import Foundation
import Glibc
import Logging
@_spi(Fuzzing) @testable import RemoteImage
import TestSupport
import XCTest
import ZstdImage

/// The remote backend against a real nginx on 127.0.0.1: data read through
/// the backend equals the served file byte for byte, the disk cache is
/// reused across restarts and dropped when the object changes, writes stay
/// in the overlay.
final class RemoteBackendTests: XCTestCase {
    var root = ""
    var cacheDir = ""
    var dirs: [TempDir] = []
    var nginx: NginxFixture!
    static let imageSize = 6 << 20 + 64 << 10  // 6 MiB + 64 KiB: a short last chunk
    var image: [UInt8] = []

    override func setUpWithError() throws {
        dirs = [try TempDir(label: "www"), try TempDir(label: "cache")]
        root = dirs[0].path
        cacheDir = dirs[1].path
        image = randomBytes(Self.imageSize, seed: 7)
        try writeFile("\(root)/disk.img", image)
        nginx = try NginxFixture(root: root)
    }

    override func tearDown() {
        nginx?.stop()
        dirs = []
    }

    func options(_ url: String, _ extra: [String] = []) throws -> RemoteOptions {
        try RemoteOptions.parse(url: url, options: ["chunk=256K", "cache-dir=\(cacheDir)"] + extra)
    }

    func open(_ url: String, _ extra: [String] = []) throws -> RemoteBackendFactory {
        try RemoteBackendFactory(options: options(url, extra), logger: Logger(label: "test"))
    }

    func stat(_ f: RemoteBackendFactory, _ name: String) -> UInt64 {
        f.statistics()?.first { $0.0 == name }?.1 ?? .max
    }

    func testRawImageReadsEqualSourceAcrossQueuesAndChunkEdges() throws {
        let f = try open(nginx.url("disk.img"))
        defer { f.shutdown() }
        XCTAssertEqual(f.geometry.capacityBytes, UInt64(Self.imageSize))
        XCTAssertTrue(f.geometry.readOnly)
        XCTAssertFalse(f.isCompressed)
        let q0 = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 64))
        let q1 = QueueDriver(try f.makeQueueBackend(queueIndex: 1, depth: 64))
        // Spans a chunk edge, the start, the short last chunk, and one 3-chunk read.
        let extents: [(UInt64, Int)] = [(256 << 10 - 512, 1024), (0, 4096), (UInt64(Self.imageSize) - 8192, 8192),
                                        (300 << 10, 700 << 10)]
        for (i, (offset, length)) in extents.enumerated() {
            let (rc, bytes) = (i % 2 == 0 ? q0 : q1).read(offset, length)
            XCTAssertEqual(rc, Int32(length))
            XCTAssertEqual(bytes, Array(image[Int(offset)..<(Int(offset) + length)]), "extent \(i)")
        }
        // Out of range: IOERR, not a crash.
        XCTAssertEqual(q0.read(UInt64(Self.imageSize) - 512, 1024).0, -EIO)
        // Writes without an overlay are refused.
        XCTAssertEqual(q0.write(0, [UInt8](repeating: 1, count: 512)), -EBADF)
        XCTAssertGreaterThan(stat(f, "chunks_fetched"), 0)
        XCTAssertEqual(stat(f, "fetch_failures"), 0)
    }

    func testConcurrentMissesOnOneChunkShareOneFetch() throws {
        let f = try open(nginx.url("disk.img"), ["readahead=0", "format=raw"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 64))
        // 32 reads inside chunk 5, issued in one batch before any fetch lands.
        let base: UInt64 = 5 * (256 << 10)
        let extents = (0..<32).map { (base + UInt64($0) * 8192, 4096) }
        for (i, (rc, bytes)) in q.readMany(extents).enumerated() {
            XCTAssertEqual(rc, 4096)
            XCTAssertEqual(bytes, Array(image[Int(extents[i].0)..<Int(extents[i].0) + 4096]))
        }
        XCTAssertEqual(stat(f, "chunks_fetched"), 1)
    }

    func testDiskCacheIsReusedAfterRestartAndDroppedWhenTheObjectChanges() throws {
        let url = nginx.url("disk.img")
        do {
            let f = try open(url)
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
            for offset in stride(from: 0, to: Self.imageSize, by: 1 << 20) {
                XCTAssertEqual(q.read(UInt64(offset), 65536).0, 65536)
            }
            XCTAssertGreaterThan(stat(f, "bytes_fetched"), 0)
            f.shutdown()
        }
        do {
            let f = try open(url)
            XCTAssertTrue(f.notes.contains { $0.text.contains("reusing disk cache") }, "\(f.notes)")
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
            for offset in stride(from: 0, to: Self.imageSize, by: 1 << 20) {
                let (rc, bytes) = q.read(UInt64(offset), 65536)
                XCTAssertEqual(rc, 65536)
                XCTAssertEqual(bytes, Array(image[offset..<offset + 65536]))
            }
            XCTAssertEqual(stat(f, "bytes_fetched"), 0, "second pass must come from the disk cache")
            XCTAssertGreaterThan(stat(f, "hits_disk"), 0)
            f.shutdown()
        }
        // The object changes (new content, new ETag): the cache must not serve old bytes.
        let changed = randomBytes(Self.imageSize, seed: 99)
        usleep(1_100_000)  // a different Last-Modified second too
        try writeFile("\(root)/disk.img", changed)
        let f = try open(url)
        defer { f.shutdown() }
        XCTAssertTrue(f.notes.contains { $0.text.contains("reset") }, "\(f.notes)")
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        let (rc, bytes) = q.read(0, 65536)
        XCTAssertEqual(rc, 65536)
        XCTAssertEqual(bytes, Array(changed[0..<65536]))
    }

    func testOverlayTakesWritesAndTheRemoteObjectIsNeverModified() throws {
        let overlay = "\(cacheDir)/disk.overlay"
        let data = randomBytes(8192, seed: 3)
        do {
            let f = try open(nginx.url("disk.img"), ["overlay=\(overlay)"])
            XCTAssertFalse(f.geometry.readOnly)
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
            XCTAssertEqual(q.write(4096, data), 8192)
            XCTAssertEqual(q.flush(), 0)
            let (rc, bytes) = q.read(0, 16384)
            XCTAssertEqual(rc, 16384)
            XCTAssertEqual(bytes, Array(image[0..<4096]) + data + Array(image[12288..<16384]))
            f.shutdown()
        }
        let f = try open(nginx.url("disk.img"), ["overlay=\(overlay)"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        XCTAssertEqual(q.read(4096, 8192).1, data, "flushed overlay data survives a restart")
        let served = try Data(contentsOf: URL(fileURLWithPath: "\(root)/disk.img"))
        XCTAssertEqual(Array(served), image, "the served object is untouched")
    }

    /// A daemon crash (no final flush; the page cache survives): every write
    /// that completed reads back after the restart (the overlay's map journal).
    func testOverlayKeepsCompletedWritesAcrossACrashWithoutFlush() throws {
        let overlay = "\(cacheDir)/disk.overlay"
        let flushed = randomBytes(4096, seed: 5), unflushed = randomBytes(8192, seed: 6)
        do {
            let f = try open(nginx.url("disk.img"), ["overlay=\(overlay)"])
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
            XCTAssertEqual(q.write(0, flushed), 4096)
            XCTAssertEqual(q.flush(), 0)
            XCTAssertEqual(q.write(1 << 20, unflushed), 8192)
            f.simulateCrashOnClose()
            f.shutdown()
        }
        let f = try open(nginx.url("disk.img"), ["overlay=\(overlay)"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        XCTAssertTrue(q.read(0, 4096).1 == flushed)
        XCTAssertTrue(q.read(1 << 20, 8192).1 == unflushed, "a completed write was lost by the crash")
        XCTAssertTrue(q.read(8192, 4096).1 == Array(image[8192..<12288]))
    }

    func testZstdImageServedRemotelyDecompressesLocally() throws {
        let raw = "\(root)/raw.img"
        var content = [UInt8](repeating: 0, count: 4 << 20)
        for i in stride(from: 0, to: content.count, by: 4096) where (i / 4096) % 3 != 0 {
            let p = randomBytes(512, seed: UInt64(i + 1))
            content.replaceSubrange(i..<i + 512, with: p)
        }
        try writeFile(raw, content)
        _ = try ImagePacker.pack(raw: raw, output: "\(root)/disk.zst")
        let f = try open(nginx.url("disk.zst"))
        defer { f.shutdown() }
        XCTAssertTrue(f.isCompressed)
        XCTAssertEqual(f.geometry.capacityBytes, UInt64(content.count))
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        for (offset, length) in [(0, 4096), (65536 - 512, 4096), (1 << 20, 256 << 10), (content.count - 4096, 4096)] {
            let (rc, bytes) = q.read(UInt64(offset), length)
            XCTAssertEqual(rc, Int32(length))
            XCTAssertEqual(bytes, Array(content[offset..<offset + length]), "offset \(offset)")
        }
        // The decompressed cache holds the whole (small) image by default; its misses went to the pool.
        XCTAssertEqual(UInt64(f.zstdCache?.capacityChunks ?? 0) * UInt64(f.zstdImage?.chunkSize ?? 0), UInt64(content.count))
        XCTAssertGreaterThan(try XCTUnwrap(f.zstdPool).statistics().decoded, 0)
        // Without a decompressed cache, frames decode inline on the queue thread.
        let inline = try RemoteBackendFactory(options: RemoteOptions.parse(
            url: nginx.url("disk.zst"), options: ["chunk=256K", "cache-dir=none", "decompressed-cache=0"]), logger: Logger(label: "test"))
        defer { inline.shutdown() }
        XCTAssertNil(inline.zstdPool)
        let q2 = QueueDriver(try inline.makeQueueBackend(queueIndex: 0, depth: 16))
        for (offset, length) in [(4096, 8192), (3 << 20, 128 << 10)] {
            XCTAssertEqual(q2.read(UInt64(offset), length).bytes, Array(content[offset..<offset + length]), "offset \(offset)")
        }
    }

    func testMissingObjectAndDeniedAccessFailOpenWithClearMessages() throws {
        XCTAssertThrowsError(try open(nginx.url("nope.img"))) { e in
            XCTAssertTrue("\(e)".contains("not found"), "\(e)")
        }
        mkdir("\(root)/dir", 0o755)
        XCTAssertThrowsError(try open(nginx.url("dir/"))) { e in
            XCTAssertTrue("\(e)".contains("access denied") || "\(e)".contains("403"), "\(e)")
        }
        XCTAssertThrowsError(try open("http://127.0.0.1:1/disk.img", ["attempts=2", "timeout=2"])) { e in
            XCTAssertTrue("\(e)".contains("cannot fetch"), "\(e)")
        }
    }

    func testPrefetchWarmsTheWholeImageOntoDisk() throws {
        let f = try open(nginx.url("disk.img"), ["prefetch=64M"])
        defer { f.shutdown() }
        f.startBackgroundWork()
        let total = stat(f, "chunks_total")
        let deadline = monotonicSeconds() + 30
        while stat(f, "chunks_on_disk") < total, monotonicSeconds() < deadline { usleep(50_000) }
        XCTAssertEqual(stat(f, "chunks_on_disk"), total)
        XCTAssertEqual(stat(f, "bytes_fetched"), UInt64(Self.imageSize))
    }

    func testSequentialReadsTriggerReadahead() throws {
        let f = try open(nginx.url("disk.img"), ["readahead=4"])
        defer { f.shutdown() }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        var offset = 0
        while offset < 2 << 20 {
            let (rc, bytes) = q.read(UInt64(offset), 128 << 10)
            XCTAssertEqual(rc, 128 << 10)
            XCTAssertEqual(bytes, Array(image[offset..<offset + (128 << 10)]))
            offset += 128 << 10
        }
        XCTAssertGreaterThan(stat(f, "readahead_requests"), 0)
        XCTAssertGreaterThan(stat(f, "hits_memory"), 0)
    }

    func testS3PathStyleObjectIsFetchedWithSignedRequests() throws {
        mkdir("\(root)/my-bucket", 0o755)
        mkdir("\(root)/my-bucket/images", 0o755)
        try writeFile("\(root)/my-bucket/images/disk.img", image)
        setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1)
        setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1)
        defer {
            unsetenv("AWS_ACCESS_KEY_ID")
            unsetenv("AWS_SECRET_ACCESS_KEY")
        }
        let f = try open("s3://my-bucket/images/disk.img",
                         ["endpoint=http://127.0.0.1:\(nginx.port)", "style=path", "region=eu-central-1"])
        defer { f.shutdown() }
        XCTAssertNotNil(f.endpoint.signer)
        XCTAssertEqual(f.endpoint.url, "http://127.0.0.1:\(nginx.port)/my-bucket/images/disk.img")
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        let (rc, bytes) = q.read(1 << 20, 65536)
        XCTAssertEqual(rc, 65536)
        XCTAssertEqual(bytes, Array(image[(1 << 20)..<(1 << 20) + 65536]))
        let signed = f.endpoint.headers(range: (0, 9), ifMatch: nil)
        XCTAssertTrue(signed.contains { $0.lowercased().hasPrefix("authorization: aws4-hmac-sha256 credential=akidexample/") },
                      "\(signed)")
        XCTAssertTrue(signed.contains { $0.lowercased().hasPrefix("x-amz-content-sha256: ") })
    }
}
