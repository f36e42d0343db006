import BlockBackends
import Glibc
import VDUSEBlk
import VDUSEDevice
import VirtioBlk
import VirtioDriverSim
import XCTest

/// A config space in memory standing in for VDUSE_DEV_SET_CONFIG /
/// INJECT_CONFIG_IRQ, with the kernel's refusal of the interrupt before DRIVER_OK.
final class FakeConfigWriter: ConfigSpaceWriter {
    var config: [UInt8]
    var driverOK: Bool
    var failWrites = false
    var interrupts = 0

    init(config: [UInt8], driverOK: Bool = true) {
        self.config = config
        self.driverOK = driverOK
    }

    func writeConfig(offset: UInt32, bytes: [UInt8]) throws(VDUSEError) {
        if failWrites { throw .ioctl(what: "VDUSE_DEV_SET_CONFIG", errno: EIO) }
        guard Int(offset) + bytes.count <= config.count else { throw .ioctl(what: "VDUSE_DEV_SET_CONFIG", errno: EINVAL) }
        for (i, b) in bytes.enumerated() { config[Int(offset) + i] = b }
    }

    func injectConfigInterrupt() throws(VDUSEError) {
        guard driverOK else { throw .ioctl(what: "VDUSE_DEV_INJECT_CONFIG_IRQ", errno: EINVAL) }
        interrupts += 1
    }

    var capacitySectors: UInt64 { config[0..<8].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) } }
}

/// Online resize: the backend, the capacity the queue workers check and the
/// config space change together, in an order that never lets a request
/// reach past what the backend holds.
final class OnlineResizeTests: XCTestCase {
    var dir = ""

    override func setUp() {
        var t = Array("/tmp/vduse-blk-resize.XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&t))
    }

    override func tearDown() { _ = system("rm -rf '\(dir)'") }

    func fileSize(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    func testGrowReachesTheRunningWorkerTheConfigSpaceAndTheFile() throws {
        let path = "\(dir)/grow.img"
        let backend = try FileBackendFactory(path: path, size: 1 << 20)
        let cell = LiveCapacity(bytes: 1 << 20)
        let h = try EngineHarness(backend: backend, liveCapacity: cell)
        defer { h.stop() }
        let writer = FakeConfigWriter(config: h.parameters.configSpace())
        XCTAssertEqual(writer.capacitySectors, 2048)
        let data = pattern(4096, seed: 9)
        // Past the end before: IOERR.
        XCTAssertEqual(h.run { $0.write(sector: 4096, bytes: data) }.status, BlkStatus.ioError)
        let r = try OnlineResize.perform(to: 4 << 20, allowShrink: false, blockSize: 512, capacity: cell,
                                         backend: backend, writer: writer)
        XCTAssertEqual(r, ResizeOutcome(oldBytes: 1 << 20, newBytes: 4 << 20, interruptSent: true, interruptNote: nil))
        XCTAssertEqual(fileSize(path), 4 << 20)
        XCTAssertEqual(writer.capacitySectors, 8192)
        XCTAssertEqual(writer.interrupts, 1)
        XCTAssertEqual(h.parameters.configSpace()[0..<8], writer.config[0..<8], "the model's config follows the live capacity")
        // The same running worker now serves the new range, no restart.
        XCTAssertEqual(h.run { $0.write(sector: 4096, bytes: data) }.status, BlkStatus.ok)
        let back = h.run { $0.read(sector: 4096, length: 4096) }
        XCTAssertEqual(back.status, BlkStatus.ok)
        XCTAssertEqual(h.builders[0].data(back.request!), data)
        XCTAssertEqual(h.run { $0.read(sector: 8192, length: 512) }.status, BlkStatus.ioError, "still bounded")
    }

    func testShrinkNeedsTheFlagAndThenCutsTheDeviceBeforeTheFile() throws {
        let path = "\(dir)/shrink.img"
        let backend = try FileBackendFactory(path: path, size: 4 << 20)
        let cell = LiveCapacity(bytes: 4 << 20)
        let h = try EngineHarness(backend: backend, liveCapacity: cell)
        defer { h.stop() }
        let writer = FakeConfigWriter(config: h.parameters.configSpace())
        XCTAssertThrowsError(try OnlineResize.perform(to: 1 << 20, allowShrink: false, blockSize: 512, capacity: cell,
                                                      backend: backend, writer: writer)) { e in
            XCTAssertEqual((e as? ResizeError)?.code, "would_shrink")
        }
        XCTAssertEqual(cell.currentBytes, 4 << 20, "nothing changed")
        XCTAssertEqual(fileSize(path), 4 << 20)
        XCTAssertEqual(writer.capacitySectors, 8192)
        XCTAssertEqual(h.run { $0.read(sector: 4096, length: 512) }.status, BlkStatus.ok)
        _ = try OnlineResize.perform(to: 1 << 20, allowShrink: true, blockSize: 512, capacity: cell,
                                     backend: backend, writer: writer)
        XCTAssertEqual(fileSize(path), 1 << 20)
        XCTAssertEqual(writer.capacitySectors, 2048)
        XCTAssertEqual(h.run { $0.read(sector: 4096, length: 512) }.status, BlkStatus.ioError)
        XCTAssertEqual(h.run { $0.read(sector: 2047, length: 512) }.status, BlkStatus.ok)
    }

    func testBeforeDriverOKTheConfigIsKeptAndNoInterruptIsReported() throws {
        let backend = try FileBackendFactory(path: "\(dir)/early.img", size: 1 << 20)
        let cell = LiveCapacity(bytes: 1 << 20)
        let writer = FakeConfigWriter(config: [UInt8](repeating: 0, count: 60), driverOK: false)
        let r = try OnlineResize.perform(to: 2 << 20, allowShrink: false, blockSize: 512, capacity: cell,
                                         backend: backend, writer: writer)
        XCTAssertFalse(r.interruptSent)
        XCTAssertNotNil(r.interruptNote)
        XCTAssertEqual(writer.capacitySectors, 4096)
        XCTAssertEqual(cell.currentBytes, 2 << 20)
    }

    func testRefusalsLeaveEverythingAsItWas() throws {
        let cell = LiveCapacity(bytes: 1 << 20)
        let writer = FakeConfigWriter(config: [UInt8](repeating: 0, count: 60))
        // A backend that cannot resize (the default): a clear error, nothing changed.
        let null = try NullBackendFactory(capacityBytes: 1 << 20)
        XCTAssertThrowsError(try OnlineResize.perform(to: 2 << 20, allowShrink: false, blockSize: 512, capacity: cell,
                                                      backend: null, writer: writer)) { e in
            XCTAssertEqual((e as? ResizeError)?.code, "unsupported")
            XCTAssertTrue("\(e)".contains("cannot be resized"), "\(e)")
        }
        // Not a multiple of the block size.
        let file = try FileBackendFactory(path: "\(dir)/r.img", size: 1 << 20)
        XCTAssertThrowsError(try OnlineResize.perform(to: (2 << 20) + 512, allowShrink: false, blockSize: 4096,
                                                      capacity: cell, backend: file, writer: writer)) { e in
            XCTAssertEqual((e as? ResizeError)?.code, "bad_size")
        }
        XCTAssertThrowsError(try OnlineResize.perform(to: 0, allowShrink: true, blockSize: 512,
                                                      capacity: cell, backend: file, writer: writer))
        // The config space cannot be written: the old capacity stays for the parsers.
        writer.failWrites = true
        XCTAssertThrowsError(try OnlineResize.perform(to: 2 << 20, allowShrink: false, blockSize: 512,
                                                      capacity: cell, backend: file, writer: writer)) { e in
            XCTAssertEqual((e as? ResizeError)?.code, "config")
        }
        XCTAssertEqual(cell.currentBytes, 1 << 20)
        XCTAssertEqual(writer.interrupts, 0)
        // No running device.
        XCTAssertThrowsError(try OnlineResize.perform(to: 2 << 20, allowShrink: false, blockSize: 512,
                                                      capacity: cell, backend: file, writer: nil)) { e in
            XCTAssertEqual(e as? ResizeError, .notRunning)
        }
    }

    func testFileBackendResizeRefusesAReplacedFileAndReadOnlyImages() throws {
        let path = "\(dir)/f.img"
        let backend = try FileBackendFactory(path: path, size: 1 << 20)
        XCTAssertEqual(try backend.resize(to: 3 << 20, allowShrink: false), 3 << 20)
        XCTAssertEqual(fileSize(path), 3 << 20)
        XCTAssertThrowsError(try backend.resize(to: 1 << 20, allowShrink: false)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .wouldShrink)
        }
        XCTAssertEqual(fileSize(path), 3 << 20)
        _ = try FileBackendFactory(path: "\(dir)/ro.img", size: 1 << 20)
        let ro = try FileBackendFactory(path: "\(dir)/ro.img", readOnly: true)
        XCTAssertThrowsError(try ro.resize(to: 4 << 20, allowShrink: false)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .unsupported)
        }
        // Someone replaced the image: the resize must not touch the new file.
        unlink(path)
        let fd = open(path, O_CREAT | O_WRONLY, 0o644)
        close(fd)
        XCTAssertThrowsError(try backend.resize(to: 8 << 20, allowShrink: false))
        XCTAssertEqual(fileSize(path), 0)
    }

    func testParametersWithoutALiveCapacityKeepTheirFixedSize() {
        var p = BlkDeviceParameters(capacityBytes: 1 << 20)
        XCTAssertEqual(p.currentCapacityBytes, 1 << 20)
        XCTAssertEqual(p, BlkDeviceParameters(capacityBytes: 1 << 20))
        let cell = LiveCapacity(bytes: 1 << 20)
        p.liveCapacity = cell
        cell.store(2 << 20)
        XCTAssertEqual(p.currentCapacityBytes, 2 << 20)
        XCTAssertEqual(p.capacitySectors, 4096)
    }
}
