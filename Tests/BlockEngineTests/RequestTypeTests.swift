import BlockBackends
import Glibc
import VirtioBlk
import VirtioDriverSim
import XCTest

/// Every virtio-blk request type through the real worker and the real file backend.
final class RequestTypeTests: XCTestCase {
    var dir = ""

    override func setUp() {
        var t = Array("/tmp/vduse-blk-test.XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&t))
    }

    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func fileBackend(_ engine: FileEngine = .uring, size: UInt64 = 8 << 20, readOnly: Bool = false) throws -> FileBackendFactory {
        let path = "\(dir)/disk-\(engine).img"
        if readOnly { _ = try FileBackendFactory(path: path, size: size) }
        return try FileBackendFactory(path: path, size: readOnly ? nil : size, readOnly: readOnly, engine: engine)
    }

    func testWriteThenReadBackEveryEngineDirectAndIndirect() throws {
        for engine in FileEngine.allCases {
            // io_uring can also be where the queue thread sleeps (--wait ring).
            for (indirect, ringWait) in [(false, false), (true, false), (false, true), (true, true)]
            where engine == .uring || !ringWait {
                let h = try EngineHarness(backend: try fileBackend(engine), indirectChains: indirect, ringWait: ringWait)
                defer { h.stop() }
                let data = pattern(64 << 10, seed: indirect ? 3 : 5)
                let w = h.run { $0.write(sector: 128, bytes: data, segments: 4) }
                XCTAssertEqual(w.status, BlkStatus.ok, "\(engine) indirect=\(indirect)")
                XCTAssertEqual(w.used?.length, 1)
                let r = h.run { $0.read(sector: 128, length: UInt32(data.count), segments: 3) }
                XCTAssertEqual(r.status, BlkStatus.ok)
                XCTAssertEqual(r.used?.length, UInt32(data.count + 1))
                XCTAssertEqual(h.builders[0].data(r.request!), data, "\(engine) indirect=\(indirect)")
                // The bytes are in the backing file too.
                let fd = open("\(dir)/disk-\(engine).img", O_RDONLY)
                var back = [UInt8](repeating: 0, count: data.count)
                XCTAssertEqual(pread(fd, &back, data.count, 128 * 512), data.count)
                close(fd)
                XCTAssertEqual(back, data)
            }
        }
    }

    func testFlushGetIDAndUnsupportedTypes() throws {
        let h = try EngineHarness(backend: try fileBackend(), serial: "serial-XYZ")
        defer { h.stop() }
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
        let id = h.run { $0.getID() }
        XCTAssertEqual(id.status, BlkStatus.ok)
        XCTAssertEqual(id.used?.length, 21)
        XCTAssertEqual(h.builders[0].data(id.request!), Array("serial-XYZ".utf8) + [UInt8](repeating: 0, count: 10))
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.getLifetime) }.status, BlkStatus.unsupported)
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.secureErase) }.status, BlkStatus.unsupported)
        XCTAssertEqual(h.run { $0.bare(type: 0xdead_beef) }.status, BlkStatus.unsupported)
    }

    func testDiscardAndWriteZeroesReadBackZeroes() throws {
        let h = try EngineHarness(backend: try fileBackend())
        defer { h.stop() }
        let data = pattern(1 << 20, seed: 9)
        XCTAssertEqual(h.run { $0.write(sector: 0, bytes: data, segments: 8) }.status, BlkStatus.ok)
        var st = stat()
        stat("\(dir)/disk-uring.img", &st)
        let blocksBefore = st.st_blocks
        // Discard the first 256 KiB, zero (no unmap) the next 256 KiB, zero with unmap the next.
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.discard, sector: 0, sectors: 512) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.writeZeroes, sector: 512, sectors: 512) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.writeZeroes, sector: 1024, sectors: 512,
                                        flags: BlkProtocol.rangeFlagUnmap) }.status, BlkStatus.ok)
        let r = h.run { $0.read(sector: 0, length: 1 << 20) }
        let back = h.builders[0].data(r.request!)
        XCTAssertEqual(Array(back[0..<(768 << 10)]), [UInt8](repeating: 0, count: 768 << 10))
        XCTAssertEqual(Array(back[(768 << 10)...]), Array(data[(768 << 10)...]))
        stat("\(dir)/disk-uring.img", &st)
        XCTAssertLessThan(st.st_blocks, blocksBefore, "discard must punch holes")
        // DISCARD with the UNMAP flag, or unknown flags: UNSUPP.
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.discard, sector: 0, sectors: 8, flags: 1) }.status,
                       BlkStatus.unsupported)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.writeZeroes, sector: 0, sectors: 8, flags: 6) }.status,
                       BlkStatus.unsupported)
        // Out of range and empty ranges: IOERR.
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.discard, sector: 16383, sectors: 2) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.discard, sector: 0, sectors: 0) }.status, BlkStatus.ioError)
    }

    func testOutOfRangeAndMisalignedAreIOErrors() throws {
        let h = try EngineHarness(backend: try fileBackend(size: 1 << 20))
        defer { h.stop() }
        // Last sector is fine, one past is not, a read straddling the end is not.
        XCTAssertEqual(h.run { $0.read(sector: 2047, length: 512) }.status, BlkStatus.ok)
        XCTAssertEqual(h.run { $0.read(sector: 2048, length: 512) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.read(sector: 2040, length: 8192) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.write(sector: UInt64.max / 256, bytes: pattern(512, seed: 1)) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.read(sector: .max, length: 512) }.status, BlkStatus.ioError)
        // A data length that is not a multiple of 512.
        XCTAssertEqual(h.run { $0.read(sector: 0, length: 100) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.write(sector: 0, bytes: pattern(1000, seed: 2)) }.status, BlkStatus.ioError)
    }

    func testReadOnlyDeviceRejectsWritesAndKeepsImage() throws {
        let backend = try fileBackend(readOnly: true)
        XCTAssertTrue(backend.geometry.readOnly)
        let h = try EngineHarness(backend: backend, readOnly: true)
        defer { h.stop() }
        XCTAssertNotEqual(h.parameters.offeredFeatures & VirtioFeature.blkReadOnly, 0)
        XCTAssertEqual(h.run { $0.write(sector: 0, bytes: pattern(4096, seed: 4)) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.range(type: BlkRequestType.writeZeroes, sector: 0, sectors: 8) }.status,
                       BlkStatus.unsupported)
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
        let r = h.run { $0.read(sector: 0, length: 4096) }
        XCTAssertEqual(r.status, BlkStatus.ok)
        XCTAssertEqual(h.builders[0].data(r.request!), [UInt8](repeating: 0, count: 4096))
    }
}

import VirtioCore
