import Logging
@_spi(Fuzzing) @testable import RemoteImage
import SystemSupport
import TestSupport
import XCTest

/// The disk tier's writer thread: a fetcher that outruns the disk waits for
/// room in the writer's queue instead of leaving chunks unwritten (a
/// restart would otherwise fetch them again), and a stopped writer drains
/// its queue.
final class DiskCacheWriterTests: XCTestCase {
    static let chunk = 64 << 10

    func testAFetcherFasterThanTheDiskWaitsAndEveryChunkReachesTheDisk() throws {
        let dir = try TempDir(label: "writer")
        let logger = Logger(label: "test")
        let chunks = 48
        let disk = try DiskChunkCache(
            directory: dir.path, key: "k",
            identity: .init(objectSize: UInt64(chunks * Self.chunk), chunkSize: Self.chunk, validator: "v1"),
            logger: logger)
        let memory = try XCTUnwrap(ChunkCache(capacityBytes: UInt64(chunks * Self.chunk), chunkSize: Self.chunk))
        let stats = RemoteStats()
        // A queue of 2 with 48 chunks offered back to back: the old writer dropped most of them.
        let writer = DiskCacheWriter(disk: disk, memory: memory, limit: 2, logger: logger, stats: stats)
        writer.start()
        for c in 0..<chunks {
            var buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.chunk, alignment: 4096)
            buffer.initializeMemory(as: UInt8.self, repeating: UInt8(c & 0xff), count: Self.chunk)
            memory.insert(c, buffer: &buffer)
            buffer.deallocate()
            XCTAssertTrue(writer.offer(c), "chunk \(c) was dropped")
        }
        writer.stop()
        XCTAssertEqual(stats.diskWritesSkipped.load(ordering: .relaxed), 0)
        let back = UnsafeMutableRawPointer.allocate(byteCount: Self.chunk, alignment: 4096)
        defer { back.deallocate() }
        for c in 0..<chunks {
            XCTAssertTrue(disk.read(c, into: back), "chunk \(c) is not on disk")
            let bytes = UnsafeRawBufferPointer(start: back, count: Self.chunk)
            XCTAssertTrue(bytes.allSatisfy { $0 == UInt8(c & 0xff) }, "chunk \(c) differs")
        }
    }
}
