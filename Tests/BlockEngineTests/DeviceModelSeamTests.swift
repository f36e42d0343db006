import Logging
import VDUSEDevice
import VirtioCore
import VirtioDriverSim
import XCTest

/// The controller knows no device type: a made-up model (not virtio-blk) is
/// started, paused, resumed and stopped through `VirtqueueService` alone.
final class DeviceModelSeamTests: XCTestCase {
    final class RecordingService: VirtqueueService {
        var calls: [String] = []
        var started: VirtqueueStart?
        var avail: UInt16 = 0

        func start<Memory: GuestMemory>(_ queue: VirtqueueStart, memory: Memory) throws {
            calls.append("start")
            started = queue
            avail = queue.startAvail
        }
        func requestPause() { calls.append("requestPause") }
        func waitParked() { calls.append("waitParked") }
        func resume() { calls.append("resume") }
        func stop() -> UInt16 {
            calls.append("stop")
            return avail &+ 3
        }
        var currentAvailIndex: UInt16 { avail &+ 1 }
        var needsReset: Bool { false }
    }

    final class RecordingModel: VirtioDeviceModel {
        var services: [RecordingService] = []
        var deviceID: UInt32 { 42 }
        var offeredFeatures: UInt64 { VirtioFeature.version1 | VirtioFeature.accessPlatform }
        func configSpace() -> [UInt8] { [1, 2, 3, 4] }
        var queueCount: Int { 2 }
        var maxQueueSize: UInt16 { 32 }
        var summary: String { "recording" }
        func makeQueueService(index: Int) throws -> any VirtqueueService {
            let s = RecordingService()
            services.append(s)
            return s
        }
    }

    func testControllerDrivesAnyDeviceModelThroughItsQueueServices() throws {
        let model = RecordingModel()
        let t = SimulatedTransport(queues: 2, size: 32, features: model.offeredFeatures)
        t.ready[1] = false
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let c = try DeviceController(transport: t, model: model, logger: logger)
        XCTAssertEqual(model.services.count, 2, "one service per queue, made up front")

        _ = c.handle(.setStatus(requestID: 1, status: 0x0f))
        XCTAssertEqual(c.runningQueues, 1)
        let q0 = model.services[0]
        XCTAssertEqual(q0.calls, ["start"])
        XCTAssertEqual(q0.started?.queueIndex, 0)
        XCTAssertEqual(q0.started?.addresses, t.drivers[0].addresses)
        XCTAssertEqual(q0.started?.features, model.offeredFeatures)
        XCTAssertEqual(q0.started?.kickFD, t.kickFDs[0])
        XCTAssertEqual(model.services[1].calls, [], "a queue the driver did not make ready is not started")

        XCTAssertTrue(c.handle(.updateIOTLB(requestID: 2, start: 0, last: 0xfff)).ok)
        XCTAssertEqual(q0.calls, ["start", "requestPause", "waitParked", "resume"])
        XCTAssertEqual(t.invalidations.count, 1)
        XCTAssertEqual(c.handle(.getVQState(requestID: 3, queue: 0)).vqState?.availIndex, 1)

        _ = c.handle(.setStatus(requestID: 4, status: 0))
        XCTAssertEqual(q0.calls.last, "stop")
        XCTAssertEqual(c.runningQueues, 0)
        XCTAssertEqual(c.handle(.getVQState(requestID: 5, queue: 0)).vqState?.availIndex, 3,
                       "after a reset: the index the service returned from stop")
    }
}
