import Foundation
import Glibc
import Logging
@testable import RemoteImage
import SystemSupport
import TestSupport
import XCTest
import ZstdImage

/// `record-trace=` / `prefetch-trace=`: the trace file format (hostile
/// input), the growing readahead window, and record then replay against a
/// real nginx: the replayed chunks are fetched before the guest asks, so
/// the guest's reads of them never wait for the network.
final class AccessTraceTests: XCTestCase {
    var dirs: [TempDir] = []
    var nginx: NginxFixture!
    var image: [UInt8] = []
    static let chunk = 256 << 10

    override func setUpWithError() throws {
        dirs = [try TempDir(label: "www"), try TempDir(label: "trace")]
        image = randomBytes(16 * Self.chunk, seed: 11)
        try writeFile("\(dirs[0].path)/disk.img", image)
        nginx = try NginxFixture(root: dirs[0].path)
    }

    override func tearDown() {
        nginx?.stop()
        dirs = []
    }

    func open(_ name: String, _ extra: [String]) throws -> RemoteBackendFactory {
        let options = try RemoteOptions.parse(url: nginx.url(name), options: ["chunk=256K", "cache-dir=none"] + extra)
        return try RemoteBackendFactory(options: options, logger: Logger(label: "test"))
    }

    func stat(_ f: RemoteBackendFactory, _ name: String) -> UInt64 {
        f.statistics()?.first { $0.0 == name }?.1 ?? .max
    }

    // MARK: file format

    func testTraceRoundTripsAndDropsRepeats() throws {
        let trace = AccessTrace(objectSize: 10 << 20, chunkSize: 1 << 20, validator: "10485760;\"abc\";Wed, 21 Oct 2026",
                                chunks: [3, 0, 9, 4])
        let parsed = try AccessTrace.parse(Array(trace.encoded().utf8))
        XCTAssertEqual(parsed, trace)
        let repeated = Array(trace.encoded().utf8) // chunk count 4 but a repeat replaces one entry
        var text = String(decoding: repeated, as: UTF8.self)
        text = text.replacingOccurrences(of: "\n9\n", with: "\n3\n")
        XCTAssertEqual(try AccessTrace.parse(Array(text.utf8)).chunks, [3, 0, 4])
    }

    func testHostileTraceFilesAreRefusedWithAReason() {
        let good = AccessTrace(objectSize: 4 << 20, chunkSize: 1 << 20, validator: "v", chunks: [1, 2]).encoded()
        let cases: [(String, String)] = [
            ("", "ends before"),
            ("not a trace\n", "not a vduse-blk access trace"),
            (good.replacingOccurrences(of: "chunks 2", with: "chunks 3"), "announces 3 chunks"),
            (good.replacingOccurrences(of: "chunks 2", with: "chunks 99"), "chunk count"),
            (good.replacingOccurrences(of: "\n2\n", with: "\n4\n"), "not a chunk index below 4"),
            (good.replacingOccurrences(of: "\n2\n", with: "\n-1\n"), "not a chunk index"),
            (good.replacingOccurrences(of: "\n2\n", with: "\n99999999999999999999\n"), "not a chunk index"),
            (good.replacingOccurrences(of: "chunk-size 1048576", with: "chunk-size 1000"), "power of two"),
            (good.replacingOccurrences(of: "object-size 4194304", with: "object-size \(UInt64.max)"), "2^24 chunks"),
            (good.replacingOccurrences(of: "object-size", with: "size"), "expected 'object-size"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try AccessTrace.parse(Array(text.utf8)), text) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error) for \(text.prefix(80))")
            }
        }
        var invalidUTF8 = Array(good.utf8)
        invalidUTF8[2] = 0xff
        XCTAssertThrowsError(try AccessTrace.parse(invalidUTF8))
    }

    func testTraceOfAnotherObjectIsAMismatch() {
        let trace = AccessTrace(objectSize: 4 << 20, chunkSize: 1 << 20, validator: "a", chunks: [])
        XCTAssertNil(trace.mismatch(objectSize: 4 << 20, chunkSize: 1 << 20, validator: "a"))
        XCTAssertNotNil(trace.mismatch(objectSize: 5 << 20, chunkSize: 1 << 20, validator: "a"))
        XCTAssertNotNil(trace.mismatch(objectSize: 4 << 20, chunkSize: 2 << 20, validator: "a"))
        XCTAssertNotNil(trace.mismatch(objectSize: 4 << 20, chunkSize: 1 << 20, validator: "b"))
    }

    // MARK: readahead window

    func testReadaheadWindowGrowsAsksEachChunkOnceAndResets() {
        var w = ReadaheadWindow(initial: 2, maximum: 8)
        XCTAssertEqual(w.advance(readerAt: 0, chunkCount: 100), 1...2)
        XCTAssertNil(w.advance(readerAt: 0, chunkCount: 100), "the same chunk again asks nothing new")
        XCTAssertEqual(w.advance(readerAt: 1, chunkCount: 100), 3...5)    // window 4
        XCTAssertEqual(w.advance(readerAt: 2, chunkCount: 100), 6...10)   // window 8
        XCTAssertEqual(w.advance(readerAt: 3, chunkCount: 100), 11...11)  // capped at 8
        XCTAssertEqual(w.window, 8)
        XCTAssertEqual(w.advance(readerAt: 95, chunkCount: 100), 96...99, "never past the last chunk")
        XCTAssertNil(w.advance(readerAt: 99, chunkCount: 100))
        w.reset()
        XCTAssertEqual(w.window, 2)
        XCTAssertEqual(w.advance(readerAt: 50, chunkCount: 100), 51...52)
        var off = ReadaheadWindow(initial: 0, maximum: 32)
        XCTAssertFalse(off.enabled)
        XCTAssertNil(off.advance(readerAt: 0, chunkCount: 100))
    }

    // MARK: record and replay

    func testRecordedOrderIsReplayedAheadOfTheGuest() throws {
        let path = "\(dirs[1].path)/raw.trace"
        let order = [5, 2, 9, 0, 13]
        do {
            let f = try open("disk.img", ["readahead=0", "format=raw", "record-trace=\(path)"])
            let q0 = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 8))
            let q1 = QueueDriver(try f.makeQueueBackend(queueIndex: 1, depth: 8))
            for (i, c) in (order + [2, 5]).enumerated() {   // repeats are recorded once
                let offset = c * Self.chunk + 4096 * i
                let (rc, bytes) = (i % 2 == 0 ? q0 : q1).read(UInt64(offset), 8192)
                XCTAssertEqual(rc, 8192)
                XCTAssertEqual(bytes, Array(image[offset..<offset + 8192]))
            }
            f.shutdown()
        }
        let trace = try AccessTrace.load(path: path)
        XCTAssertEqual(trace.chunks, order)
        XCTAssertEqual(trace.objectSize, UInt64(image.count))

        let f = try open("disk.img", ["readahead=0", "format=raw", "prefetch-trace=\(path)"])
        defer { f.shutdown() }
        XCTAssertTrue(f.noteLines.contains { $0.contains("replaying 5 chunks") }, "\(f.noteLines)")
        // Nothing is replayed until the device serves (the daemon calls this after the attach).
        usleep(100_000)
        XCTAssertEqual(stat(f, "trace_prefetch_requests"), 0)
        XCTAssertEqual(stat(f, "chunks_fetched"), 0)
        f.startBackgroundWork()
        let deadline = monotonicSeconds() + 20
        while stat(f, "chunks_fetched") < UInt64(order.count), monotonicSeconds() < deadline { usleep(10_000) }
        XCTAssertEqual(stat(f, "trace_prefetch_requests"), UInt64(order.count))
        XCTAssertEqual(stat(f, "chunks_fetched"), UInt64(order.count))
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 8))
        for c in order.reversed() {
            let offset = c * Self.chunk
            let (rc, bytes) = q.read(UInt64(offset), Self.chunk)
            XCTAssertEqual(rc, Int32(Self.chunk))
            XCTAssertEqual(bytes, Array(image[offset..<offset + Self.chunk]))
        }
        XCTAssertEqual(stat(f, "reads_waited_for_network"), 0, "every traced chunk was local before the guest asked")
        XCTAssertEqual(stat(f, "chunks_fetched"), UInt64(order.count))
    }

    func testMissingOrForeignTraceIsSkippedWithANote() throws {
        let missing = try open("disk.img", ["prefetch-trace=\(dirs[1].path)/none.trace"])
        XCTAssertTrue(missing.noteLines.contains { $0.contains("not replayed") }, "\(missing.noteLines)")
        missing.shutdown()
        let foreign = "\(dirs[1].path)/foreign.trace"
        try AccessTrace(objectSize: 1 << 20, chunkSize: Self.chunk, validator: "x", chunks: [1]).write(path: foreign)
        let f = try open("disk.img", ["prefetch-trace=\(foreign)"])
        defer { f.shutdown() }
        XCTAssertTrue(f.noteLines.contains { $0.contains("not replayed") && $0.contains("1048576 bytes") }, "\(f.noteLines)")
        XCTAssertEqual(stat(f, "trace_prefetch_requests"), 0)
    }

    func testZstdTraceListsTheObjectChunksOfEachTouchedFrame() throws {
        var content = [UInt8](repeating: 0, count: 4 << 20)
        for i in stride(from: 0, to: content.count, by: 8192) {
            content.replaceSubrange(i..<i + 1024, with: randomBytes(1024, seed: UInt64(i + 3)))
        }
        try writeFile("\(dirs[0].path)/raw.img", content)
        _ = try ImagePacker.pack(raw: "\(dirs[0].path)/raw.img", output: "\(dirs[0].path)/disk.zst")
        let path = "\(dirs[1].path)/zstd.trace"
        let offsets = [3 << 20, 1 << 20 + 4096]
        do {
            let f = try open("disk.zst", ["readahead=0", "record-trace=\(path)"])
            let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 8))
            for o in offsets { XCTAssertEqual(q.read(UInt64(o), 4096).1, Array(content[o..<o + 4096])) }
            f.shutdown()
        }
        let trace = try AccessTrace.load(path: path)
        XCTAssertFalse(trace.chunks.isEmpty)
        let f = try open("disk.zst", ["readahead=0", "prefetch-trace=\(path)"])
        defer { f.shutdown() }
        f.startBackgroundWork()
        let deadline = monotonicSeconds() + 20
        // The replayed fetches land before the guest reads: then nothing waits for the network.
        while !trace.chunks.allSatisfy({ f.store.isLocal($0) }), monotonicSeconds() < deadline { usleep(10_000) }
        let q = QueueDriver(try f.makeQueueBackend(queueIndex: 0, depth: 8))
        for o in offsets.reversed() { XCTAssertEqual(q.read(UInt64(o), 4096).1, Array(content[o..<o + 4096])) }
        XCTAssertEqual(stat(f, "reads_waited_for_network"), 0)
    }
}
