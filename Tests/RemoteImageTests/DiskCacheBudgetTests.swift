import BlockBackends
import Foundation
import Glibc
import Logging
@_spi(Fuzzing) @testable import RemoteImage
import SystemSupport
import TestSupport
import XCTest

/// The bounded disk tier (`cache-size=`): the data file's allocated blocks
/// never pass the budget (plus one chunk of slack for file-system metadata),
/// least recently used chunks go first, evicted chunks are absent after a
/// restart, blocks a crash left behind are punched at open, and everything
/// read back is byte-exact. The last test drives it end to end through the
/// remote backend and a real nginx.
final class DiskCacheBudgetTests: XCTestCase {
    static let chunk = 64 << 10
    var dir: TempDir!
    let logger = Logger(label: "test")

    override func setUpWithError() throws { dir = try TempDir(label: "budget") }
    override func tearDown() { dir = nil }

    func identity(_ size: Int) -> DiskChunkCache.Identity {
        .init(objectSize: UInt64(size), chunkSize: Self.chunk, validator: "v1")
    }

    func open(_ size: Int, budget: UInt64?) throws -> DiskChunkCache {
        try DiskChunkCache(directory: dir.path, key: "k", identity: identity(size), budgetBytes: budget, logger: logger)
    }

    /// The data file's allocated bytes (st_blocks × 512).
    func allocated(_ path: String) -> UInt64 {
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        return UInt64(st.st_blocks) * 512
    }

    func store(_ cache: DiskChunkCache, _ image: [UInt8], _ chunk: Int) {
        let start = chunk * Self.chunk
        let end = min(image.count, start + Self.chunk)
        Array(image[start..<end]).withUnsafeBytes { cache.store(chunk, from: $0.baseAddress!) }
    }

    /// Reads chunk `chunk` from the cache: its bytes, or nil on a miss.
    func read(_ cache: DiskChunkCache, _ chunk: Int) -> [UInt8]? {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.chunk, alignment: 4096)
        defer { buffer.deallocate() }
        guard cache.read(chunk, into: buffer) else { return nil }
        return Array(UnsafeRawBufferPointer(start: buffer, count: cache.chunkLength(chunk)))
    }

    func expected(_ image: [UInt8], _ chunk: Int) -> [UInt8] {
        Array(image[(chunk * Self.chunk)..<min(image.count, (chunk + 1) * Self.chunk)])
    }

    func testAnImageFourTimesTheBudgetNeverPassesItAcrossARestart() throws {
        let budget = UInt64(16 * Self.chunk)
        let size = 64 * Self.chunk + 4096  // 4× the budget, and a short last chunk
        let image = randomBytes(size, seed: 17)
        let chunks = 65
        var dataPath = ""
        do {
            let cache = try open(size, budget: budget)
            dataPath = cache.dataPath
            for c in 0..<(chunks / 2) {
                store(cache, image, c)
                XCTAssertLessThanOrEqual(allocated(dataPath), budget + UInt64(Self.chunk), "after storing chunk \(c)")
            }
            try cache.persist(force: true)
            XCTAssertGreaterThan(cache.evictedChunks, 0)
            XCTAssertLessThanOrEqual(cache.presentChunks, 16)
            for c in 0..<(chunks / 2) {
                if let bytes = read(cache, c) { XCTAssertEqual(bytes, expected(image, c), "chunk \(c)") }
            }
        }
        // Restart: what was evicted stays absent, what is present is intact.
        let cache = try open(size, budget: budget)
        XCTAssertTrue(cache.openNote.contains("reusing"), cache.openNote)
        XCTAssertLessThanOrEqual(allocated(dataPath), budget + UInt64(Self.chunk))
        var present = 0
        for c in 0..<chunks {
            guard let bytes = read(cache, c) else { continue }
            XCTAssertEqual(bytes, expected(image, c), "chunk \(c) after the restart")
            present += 1
        }
        XCTAssertGreaterThan(present, 0)
        XCTAssertLessThanOrEqual(present, 16)
        // The rest of the image, then all of it again: still within the budget, still exact.
        for c in Array((chunks / 2)..<chunks) + Array(0..<chunks) {
            if read(cache, c) == nil { store(cache, image, c) }
            XCTAssertLessThanOrEqual(allocated(dataPath), budget + UInt64(Self.chunk), "after chunk \(c)")
        }
        try cache.persist(force: true)
        var readBack = 0
        for c in 0..<chunks {
            if let bytes = read(cache, c) {
                XCTAssertEqual(bytes, expected(image, c), "chunk \(c) at the end")
                readBack += 1
            }
        }
        XCTAssertGreaterThanOrEqual(readBack, 14, "the low watermark keeps 90% of the budget")
        XCTAssertLessThanOrEqual(allocated(dataPath), budget + UInt64(Self.chunk))
    }

    func testTheLeastRecentlyUsedChunkGoesFirst() throws {
        let size = 32 * Self.chunk
        let image = randomBytes(size, seed: 3)
        let cache = try open(size, budget: UInt64(8 * Self.chunk))  // high 8, low 7
        for c in 0..<8 { store(cache, image, c) }
        try cache.persist(force: true)
        XCTAssertEqual(read(cache, 0), expected(image, 0))  // chunk 0 is now the most recent
        store(cache, image, 8)  // one past the budget: evicts one chunk, the least recent
        try cache.persist(force: true)
        XCTAssertTrue(cache.isPresent(0), "a chunk just read was evicted")
        XCTAssertFalse(cache.isPresent(1), "the least recently used chunk should have gone")
        XCTAssertEqual(cache.evictedChunks, 1)
        XCTAssertNil(read(cache, 1))
        for c in [0, 2, 3, 4, 5, 6, 7, 8] { XCTAssertEqual(read(cache, c), expected(image, c), "chunk \(c)") }
    }

    func testBlocksACrashLeftBehindArePunchedAtOpenAndNeverReadAsPresent() throws {
        let size = 16 * Self.chunk
        let image = randomBytes(size, seed: 5)
        let budget = UInt64(8 * Self.chunk)
        var dataPath = ""
        do {
            let cache = try open(size, budget: budget)
            dataPath = cache.dataPath
            for c in 0..<4 { store(cache, image, c) }
            try cache.persist(force: true)
            // Written but never made present (no persist): a crash now.
            for c in 4..<7 { store(cache, image, c) }
            cache.abandoned = true
        }
        // As after a crash between the metadata write and the punch of an
        // eviction: data where the bitmap says absent.
        let fd = Glibc.open(dataPath, O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let junk = randomBytes(Self.chunk, seed: 9)
        XCTAssertEqual(junk.withUnsafeBytes { pwrite(fd, $0.baseAddress, Self.chunk, off_t(10 * Self.chunk)) }, Self.chunk)
        close(fd)
        XCTAssertGreaterThanOrEqual(allocated(dataPath), UInt64(8 * Self.chunk))
        let cache = try open(size, budget: budget)
        XCTAssertEqual(cache.presentChunks, 4)
        XCTAssertEqual(allocated(dataPath), UInt64(4 * Self.chunk), "absent chunks' blocks are punched at open")
        for c in 4..<16 { XCTAssertNil(read(cache, c), "chunk \(c) must not read as present") }
        for c in 0..<4 { XCTAssertEqual(read(cache, c), expected(image, c)) }
    }

    func testAShrunkBudgetEvictsAtOpen() throws {
        let size = 16 * Self.chunk
        let image = randomBytes(size, seed: 11)
        var dataPath = ""
        do {
            let cache = try open(size, budget: nil)
            dataPath = cache.dataPath
            for c in 0..<16 { store(cache, image, c) }
        }
        let cache = try open(size, budget: UInt64(6 * Self.chunk))
        XCTAssertLessThanOrEqual(cache.presentChunks, 5)
        XCTAssertLessThanOrEqual(allocated(dataPath), UInt64(6 * Self.chunk))
        for c in 0..<16 { if let b = read(cache, c) { XCTAssertEqual(b, expected(image, c)) } }
    }

    func testBudgetOptionsAreValidated() {
        XCTAssertEqual(try RemoteOptions.parse(url: "http://h/x", options: ["cache-size=4M"]).cacheSizeBytes, 4 << 20)
        for bad in [["cache-size=3M"], ["cache-size=1G", "cache-dir=none"], ["cache-size=lots"],
                    ["chunk=4M", "cache-size=8M"]] {
            XCTAssertThrowsError(try RemoteOptions.parse(url: "http://h/x", options: bad), "\(bad)")
        }
        XCTAssertThrowsError(try open(1 << 20, budget: UInt64(Self.chunk)))
    }

    /// Through the backend: a remote image 4× the disk budget read end to
    /// end, a restart, then read again (from its end, so the chunks still on
    /// disk are hit before they are evicted), byte-exact throughout.
    func testRemoteImageFourTimesTheCacheReadsExactAcrossARestart() throws {
        let www = try TempDir(label: "www")
        let size = 8 << 20
        let image = randomBytes(size, seed: 23)
        try writeFile("\(www.path)/disk.img", image)
        let nginx = try NginxFixture(root: www.path)
        defer { nginx.stop() }
        let chunk = 256 << 10, budget: UInt64 = 2 << 20
        let options = try RemoteOptions.parse(url: nginx.url("disk.img"), options: [
            "chunk=256K", "memory=2M", "cache-dir=\(dir.path)", "cache-size=2M", "format=raw"])
        func stat(_ f: RemoteBackendFactory, _ name: String) -> UInt64 { f.statistics()?.first { $0.0 == name }?.1 ?? .max }
        func dataFile() -> String {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            return dir.path + "/" + (names.first { $0.hasSuffix(".data") } ?? "missing")
        }
        do {
            let f = try RemoteBackendFactory(options: options, logger: logger)
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
            for offset in stride(from: 0, to: size, by: chunk) {
                let (rc, bytes) = q.read(UInt64(offset), chunk)
                XCTAssertEqual(rc, Int32(chunk))
                XCTAssertTrue(bytes == Array(image[offset..<offset + chunk]), "cold read at \(offset)")
                XCTAssertLessThanOrEqual(allocated(dataFile()), budget + UInt64(chunk), "after the read at \(offset)")
            }
            f.shutdown()
            XCTAssertGreaterThan(stat(f, "chunks_evicted_disk"), 0)
            XCTAssertEqual(stat(f, "disk_cache_budget_bytes"), budget)
            XCTAssertLessThanOrEqual(allocated(dataFile()), budget + UInt64(chunk))
        }
        let f = try RemoteBackendFactory(options: options, logger: logger)
        defer { f.shutdown() }
        XCTAssertTrue(f.notes.contains { $0.text.contains("reusing disk cache") }, "\(f.notes)")
        XCTAssertLessThanOrEqual(allocated(dataFile()), budget + UInt64(chunk))
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 16))
        for offset in stride(from: size - chunk, through: 0, by: -chunk) {
            let (rc, bytes) = q.read(UInt64(offset), chunk)
            XCTAssertEqual(rc, Int32(chunk))
            XCTAssertTrue(bytes == Array(image[offset..<offset + chunk]), "warm read at \(offset)")
            XCTAssertLessThanOrEqual(allocated(dataFile()), budget + UInt64(chunk), "after the read at \(offset)")
        }
        XCTAssertGreaterThan(stat(f, "hits_disk"), 0, "chunks kept on disk are served after the restart")
        XCTAssertGreaterThan(stat(f, "bytes_fetched"), 0, "evicted chunks are fetched again")
    }
}
