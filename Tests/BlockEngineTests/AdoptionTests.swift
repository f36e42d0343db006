import BlockBackends
import Glibc
import Logging
import VDUSEBlk
import VDUSEDevice
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// A second daemon taking over a device from the in-flight log file: state
/// directory lock, log validation, resume point, ring scan and interrupt.
final class AdoptionTests: XCTestCase {
    var dir = ""

    override func setUp() {
        var tmpl = Array("/tmp/vduse-blk-adopt.XXXXXX".utf8CString)
        dir = String(cString: mkdtemp(&tmpl))
        setenv("VDUSE_BLK_RUN_DIR", dir, 1)
    }

    override func tearDown() {
        unsetenv("VDUSE_BLK_RUN_DIR")
        _ = system("rm -rf '\(dir)'")
    }

    func model(_ backend: any BlockBackendFactory, queues: Int = 2, capacity: UInt64 = 4 << 20) -> VirtioBlkDeviceModel {
        let params = BlkDeviceParameters(capacityBytes: capacity, numQueues: UInt16(queues), queueSize: 32)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return VirtioBlkDeviceModel(parameters: params, backend: backend, logger: logger)
    }

    func identity(_ m: VirtioBlkDeviceModel) -> UInt64 {
        InflightLogFile.identity(deviceID: m.deviceID, features: m.offeredFeatures, queueCount: m.queueCount,
                                 maxQueueSize: m.maxQueueSize, config: m.configSpace())
    }

    func testLiveOwnerIsReportedAndDeadOwnerReleasesTheLock() throws {
        var first: DeviceStateDirectory? = try DeviceStateDirectory(name: "d0")
        XCTAssertThrowsError(try DeviceStateDirectory(name: "d0")) { error in
            XCTAssertTrue("\(error)".contains("in use by pid \(getpid())"), "\(error)")
        }
        XCTAssertEqual(DeviceStateDirectory.livingOwner(of: "d0"), getpid())
        first = nil  // the owner "dies": its lock goes with its fd
        XCTAssertNil(DeviceStateDirectory.livingOwner(of: "d0"))
        XCTAssertNoThrow(try DeviceStateDirectory(name: "d0"))
        _ = first
    }

    func testAdoptResumesWithoutRepeatingAndServesWhatArrivedMeanwhile() throws {
        let backend = try MemoryBackendFactory(capacityBytes: 4 << 20)
        let m = model(backend)
        let t = SimulatedTransport(queues: 2, size: 32, features: m.offeredFeatures)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let path = "\(dir)/inflight"
        let b = BlkRequestBuilder(driver: t.drivers[0])
        do {
            let log = try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32, identity: identity(m), fresh: true)
            let a = try DeviceController(transport: t, model: m, logger: logger)
            a.inflightLog = log
            _ = a.handle(.setStatus(requestID: 1, status: 0x0f))
            XCTAssertEqual(log.status, 0x0f)
            for i in 0..<4 {
                _ = b.write(sector: UInt64(i * 8), bytes: pattern(4096, seed: UInt8(i)))
                t.kick(0)
                XCTAssertEqual(t.drivers[0].waitUsed(count: 1).count, 1)
            }
            // The daemon "dies" without a reset: its queues stop, the log keeps DRIVER_OK.
            a.stopQueues()
        }
        XCTAssertEqual(t.drivers[0].usedIndex, 4)
        // Requests the driver queued while no daemon listened (no kick will come for them).
        var late: [SimBlkRequest] = []
        for i in 0..<3 {
            let sector = UInt64(100 + i * 8)
            let bytes = pattern(4096, seed: UInt8(50 + i))
            late.append(try XCTUnwrap(b.write(sector: sector, bytes: bytes)))
        }
        let interruptsBefore = t.sink.count(queue: 0)
        // The kernel would report the driver's base (0), not the daemon's progress.
        let log2 = try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32, identity: identity(m), fresh: false)
        let c = try DeviceController(transport: t, model: m, logger: logger)
        c.inflightLog = log2
        try c.adopt()
        XCTAssertEqual(c.runningQueues, 2)
        XCTAssertEqual(t.drivers[0].waitUsed(count: 3).count, 3, "requests made available meanwhile are served")
        XCTAssertEqual(t.drivers[0].usedIndex, 7, "nothing completed twice")
        for (i, r) in late.enumerated() {
            XCTAssertEqual(b.statusByte(r), BlkStatus.ok)
            let offset = UInt64(100 + i * 8) * 512
            let expected = pattern(4096, seed: UInt8(50 + i))
            XCTAssertEqual(backend.bytes(at: offset, count: 4096), expected)
        }
        XCTAssertGreaterThan(t.sink.count(queue: 0), interruptsBefore, "one interrupt per queue after adopting")
        XCTAssertGreaterThan(t.sink.count(queue: 1), 0)
        // A reset empties the log; a later adoption starts nothing.
        _ = c.handle(.setStatus(requestID: 9, status: 0))
        XCTAssertEqual(log2.status, 0)
        XCTAssertEqual(log2.queue(0).ringSize, 0)
    }

    func testMismatchedOrGarbageLogIsRefusedAndLeftAlone() throws {
        let backend = try MemoryBackendFactory(capacityBytes: 4 << 20)
        let m = model(backend)
        let path = "\(dir)/inflight"
        _ = try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32, identity: identity(m), fresh: true)
        let other = model(try MemoryBackendFactory(capacityBytes: 8 << 20), capacity: 8 << 20)
        XCTAssertThrowsError(try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32,
                                                 identity: identity(other), fresh: false)) { error in
            XCTAssertTrue("\(error)".contains("other options"), "\(error)")
        }
        XCTAssertThrowsError(try InflightLogFile(path: path, queueCount: 4, maxQueueSize: 32,
                                                 identity: identity(m), fresh: false))
        // Still valid for the right device after the refusals.
        XCTAssertNoThrow(try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32, identity: identity(m), fresh: false))
        // Garbage of the right size.
        let fd = open(path, O_WRONLY)
        var junk = [UInt8](repeating: 0x5a, count: 64)
        _ = pwrite(fd, &junk, 64, 0)
        close(fd)
        XCTAssertThrowsError(try InflightLogFile(path: path, queueCount: 2, maxQueueSize: 32,
                                                 identity: identity(m), fresh: false)) { error in
            XCTAssertTrue("\(error)".contains("bad magic"), "\(error)")
        }
    }

    func testAdoptWithARingTheLogDoesNotDescribeChangesNothing() throws {
        let backend = try MemoryBackendFactory(capacityBytes: 4 << 20)
        let m = model(backend)
        let t = SimulatedTransport(queues: 2, size: 32, features: m.offeredFeatures)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let log = try InflightLogFile(path: "\(dir)/inflight", queueCount: 2, maxQueueSize: 32,
                                      identity: identity(m), fresh: true)
        log.record(status: 0x0f)
        let q0 = t.drivers[0].addresses
        log.queue(0).begin(queueIndex: 0, addresses: QueueAddresses(size: 32, descTable: q0.descTable + 0x1000,
                                                                     availRing: q0.availRing, usedRing: q0.usedRing),
                           startAvail: 0, usedIdx: 0)
        let c = try DeviceController(transport: t, model: m, logger: logger)
        c.inflightLog = log
        XCTAssertThrowsError(try c.adopt()) { error in
            XCTAssertTrue("\(error)".contains("another ring"), "\(error)")
        }
        XCTAssertEqual(c.runningQueues, 0)
        XCTAssertTrue(t.kickFDs.isEmpty, "no kick fd installed")
    }
}
