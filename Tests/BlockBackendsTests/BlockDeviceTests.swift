import CSys
import CAsyncIO
import Foundation
import Glibc
import TestSupport
import XCTest
@testable import BlockBackends

/// Block-device images, on a loop device over a temp file. Skipped where
/// loop devices cannot be set up (no root, no /dev/loop-control).
final class BlockDeviceTests: XCTestCase {
    private var dir: TempDir!
    private var device: String?

    override func setUpWithError() throws {
        dir = try TempDir()
        let backing = dir.file("backing.img")
        try writeFile(backing, [])
        XCTAssertEqual(truncate(backing, 8 << 20), 0)
        guard let name = Self.losetup(["--find", "--show", backing]), name.hasPrefix("/dev/loop") else {
            throw XCTSkip("cannot attach a loop device here")
        }
        device = name
    }

    override func tearDown() {
        if let device { _ = Self.losetup(["--detach", device]) }
        device = nil
        dir = nil
    }

    private static func losetup(_ arguments: [String]) -> String? {
        for tool in ["/usr/sbin/losetup", "/sbin/losetup"] where access(tool, X_OK) == 0 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = arguments
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { return nil }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return nil
    }

    func testGeometryAndSizes() throws {
        let path = try XCTUnwrap(device)
        do {
            let f = try FileBackendFactory(path: path, engine: .sync)
            XCTAssertTrue(f.isBlockDevice)
            XCTAssertEqual(f.geometry.capacityBytes, 8 << 20)
            XCTAssertEqual(f.geometry.requiredAlignment, 512)
            // One writer: the device is held O_EXCL (and locked) while f lives.
            XCTAssertThrowsError(try FileBackendFactory(path: path, engine: .sync)) {
                XCTAssertEqual(($0 as? BackendError)?.kind, .busy, "\($0)")
            }
        }
        XCTAssertEqual(try FileBackendFactory(path: path, size: 4 << 20, engine: .sync).geometry.capacityBytes,
                       4 << 20, "a smaller size exposes a prefix")
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 16 << 20, engine: .sync)) {
            XCTAssertEqual(($0 as? BackendError)?.kind, .badSize, "\($0)")
        }
        let direct = try FileBackendFactory(path: path, direct: true, engine: .sync)
        var logical: UInt32 = 0
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        XCTAssertEqual(vb_io_blk_logical_block_size(fd, &logical), 0)
        XCTAssertEqual(direct.geometry.requiredAlignment, logical)
    }

    func testEveryEngineReadsWritesAndZeroes() throws {
        let path = try XCTUnwrap(device)
        for engine in FileEngine.allCases {
            for direct in [false, true] {
                let f = try FileBackendFactory(path: path, direct: direct, engine: engine)
                let q = try f.makeQueueBackend(queueIndex: 0, depth: 8)
                let data = pattern(64 << 10, seed: UInt8(direct ? 1 : 2))
                let out = AlignedBuffer(count: data.count)
                out.set(data)
                XCTAssertEqual(writeOp(q, out, at: 1 << 20), Int32(data.count), "\(engine) direct=\(direct)")
                q.prepareFlush(tag: 2)
                XCTAssertEqual(submitAndWait(q, count: 1).first?.result, 0)
                q.prepareWriteZeroes(offset: (1 << 20) + 4096, length: 8192, unmap: false, tag: 3)
                q.prepareDiscard(offset: (1 << 20) + 32768, length: 16384, tag: 4)
                q.prepareWriteZeroes(offset: (1 << 20) + 16384, length: 4096, unmap: true, tag: 5)
                let done = submitAndWait(q, count: 3)
                XCTAssertEqual(done.sorted { $0.tag < $1.tag },
                               [IOCompletion(tag: 3, result: 0), IOCompletion(tag: 4, result: 0),
                                IOCompletion(tag: 5, result: 0)], "\(engine) direct=\(direct)")
                let back = AlignedBuffer(count: data.count, fill: 0xAA)
                XCTAssertEqual(readOp(q, back, at: 1 << 20), Int32(data.count))
                var expected = data
                for i in 4096..<12288 { expected[i] = 0 }
                for i in 16384..<20480 { expected[i] = 0 }
                let got = back.bytes
                // Discarded data is unspecified after a discard; compare everything else.
                XCTAssertEqual(Array(got[0..<32768]), Array(expected[0..<32768]), "\(engine) direct=\(direct)")
                XCTAssertEqual(Array(got[49152...]), Array(expected[49152...]), "\(engine) direct=\(direct)")
            }
        }
    }
}
