import BlockBackends
@_spi(Fuzzing) import BlockEngine
import Glibc
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// A backend that holds every op until the test lets it finish, so a test can
/// "kill" the worker with requests submitted and not reaped. Writes land in
/// `image` (sector -> bytes) when released.
final class HeldBackend: QueueBackend {
    struct Op { var tag: UInt32; var offset: UInt64; var data: [UInt8]? }
    let completionFD: Int32 = -1
    let capacity: Int
    let image: HeldImage
    var held: [Op] = []
    var done: [IOCompletion] = []
    var inFlight: Int { held.count + done.count }

    init(image: HeldImage, depth: Int) {
        self.image = image
        capacity = depth
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        held.append(Op(tag: tag, offset: offset, data: nil))
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        var bytes: [UInt8] = []
        for i in 0..<count {
            let v = iovecs[i]
            bytes += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len)
        }
        held.append(Op(tag: tag, offset: offset, data: bytes))
    }

    func prepareFlush(tag: UInt32) { held.append(Op(tag: tag, offset: 0, data: nil)) }
    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) { held.append(Op(tag: tag, offset: 0, data: nil)) }
    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        held.append(Op(tag: tag, offset: 0, data: nil))
    }
    func submit() {}

    /// Executes up to `n` held ops (chosen by `pick`) and makes them reapable.
    func release(_ n: Int, pick: (Int) -> Int = { _ in 0 }) {
        for _ in 0..<min(n, held.count) {
            let op = held.remove(at: pick(held.count))
            var result: Int32 = 0
            if let d = op.data {
                image.blocks[op.offset] = d
                result = Int32(d.count)
            }
            done.append(IOCompletion(tag: op.tag, result: result))
        }
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        let n = min(buffer.count, done.count)
        for i in 0..<n { buffer[i] = done[i] }
        done.removeFirst(n)
        return n
    }
}

final class HeldImage: @unchecked Sendable {
    var blocks: [UInt64: [UInt8]] = [:]
}

/// A seeded xorshift generator (reproducible failures: the seed is in the message).
struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// The in-flight log against the simulated driver: a worker is "killed" at
/// chosen points (no drain: its backend ops stay held, its publish is cut
/// between any two log stores), a new worker is rebuilt from the log and the
/// ring, and the driver's view proves that no request was lost and none was
/// returned twice, and every write reached the image.
final class InflightLogTests: XCTestCase {
    static let queueSize: UInt16 = 16
    static let blockBytes = 4096

    /// One simulated device life: driver, log region, image; workers come and go.
    final class Rig {
        let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 48 << 20)
        let driver: SimulatedDriver
        let builder: BlkRequestBuilder
        let sink = CountingInterruptSink(queues: 1)
        let parameters: BlkDeviceParameters
        let region: UnsafeMutableRawPointer
        let log: InflightQueueLog
        let image = HeldImage()
        var logger = Logger(label: "inflight-test")
        var worker: QueueWorker<SimulatedGuestMemory>!
        var backend: HeldBackend!
        /// Requests the driver made available and has not seen used: head -> (id, request).
        var outstanding: [UInt16: (id: Int, request: SimBlkRequest)] = [:]
        var completedIDs = Set<Int>()
        var writes: [Int: (sector: UInt64, bytes: [UInt8])] = [:]
        var nextID = 0

        init() {
            driver = SimulatedDriver(memory: memory, size: InflightLogTests.queueSize, eventIdx: true)
            builder = BlkRequestBuilder(driver: driver, indirect: true)
            parameters = BlkDeviceParameters(capacityBytes: 64 << 20, readOnly: false, serial: "log",
                                             numQueues: 1, queueSize: InflightLogTests.queueSize,
                                             discard: false, writeZeroes: false)
            let bytes = InflightQueueLog.regionBytes(maxQueueSize: InflightLogTests.queueSize)
            region = .allocate(byteCount: bytes, alignment: 4096)
            region.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)  // garbage before begin
            log = InflightQueueLog(base: region, maxQueueSize: InflightLogTests.queueSize)
            log.begin(queueIndex: 0, addresses: driver.addresses, startAvail: 0, usedIdx: 0)
            logger.logLevel = .critical
        }

        deinit { region.deallocate() }

        func startWorker(startAvail: UInt16 = 0, resubmit: [UInt16] = [], nextSeq: UInt64 = 1) throws {
            backend = HeldBackend(image: image, depth: Int(InflightLogTests.queueSize))
            worker = try QueueWorker(
                config: QueueWorkerConfig(queueIndex: 0, addresses: driver.addresses,
                                          features: parameters.offeredFeatures, startAvail: startAvail,
                                          log: log, resubmit: resubmit, nextSeq: nextSeq),
                memory: memory, backend: backend, parameters: parameters, sink: sink, kickFD: driver.kickFD,
                logger: logger)
            worker.openQueueSynchronously()
        }

        /// Recovers from the log and the ring and starts a fresh worker on it.
        @discardableResult
        func recoverAndRestart() throws -> InflightQueueLog.Recovery {
            let r = try XCTUnwrap(try log.recover(queueIndex: 0, addresses: driver.addresses, memory: memory))
            try startWorker(startAvail: r.startAvail, resubmit: r.resubmit, nextSeq: r.nextSeq)
            return r
        }

        /// The driver makes `n` distinct writes available (fewer if the ring is full).
        func addWrites(_ n: Int) {
            for _ in 0..<n {
                let id = nextID
                let sector = UInt64(id) * UInt64(InflightLogTests.blockBytes / 512)
                let bytes = pattern(InflightLogTests.blockBytes, seed: UInt8(truncatingIfNeeded: id))
                guard let r = builder.write(sector: sector, bytes: bytes) else { return }
                XCTAssertNil(outstanding[r.head], "driver reused head \(r.head) while outstanding")
                outstanding[r.head] = (id, r)
                writes[id] = (sector, bytes)
                nextID += 1
            }
        }

        /// The driver reads the used ring: every element must answer an
        /// outstanding request exactly once, with status OK.
        func collect(file: StaticString = #filePath, line: UInt = #line) {
            for u in driver.collectUsed() {
                guard let o = outstanding.removeValue(forKey: u.head) else {
                    XCTFail("head \(u.head) returned while not outstanding (completed twice?)", file: file, line: line)
                    continue
                }
                XCTAssertFalse(completedIDs.contains(o.id), "request \(o.id) completed twice", file: file, line: line)
                completedIDs.insert(o.id)
                XCTAssertEqual(builder.statusByte(o.request), BlkStatus.ok, "request \(o.id) status",
                               file: file, line: line)
            }
        }

        /// Serves until every outstanding request is back (new worker, no crash).
        func drain(file: StaticString = #filePath, line: UInt = #line) {
            for _ in 0..<200 where !outstanding.isEmpty {
                _ = worker.serviceOnceSynchronously()
                backend.release(backend.held.count)
                _ = worker.serviceOnceSynchronously()
                collect(file: file, line: line)
            }
            XCTAssertTrue(outstanding.isEmpty, "requests lost: \(outstanding.values.map(\.id).sorted())",
                          file: file, line: line)
        }

        /// Every write the driver issued is in the image.
        func verifyImage(file: StaticString = #filePath, line: UInt = #line) {
            for (id, w) in writes {
                XCTAssertEqual(image.blocks[w.sector * 512], w.bytes, "write \(id) lost", file: file, line: line)
            }
        }

        /// A SIGKILL: the worker and its backend vanish; ops it had submitted
        /// may or may not have reached the image (keep a random part of them).
        func kill(rng: inout SeededRNG) {
            backend.release(Int.random(in: 0...backend.held.count, using: &rng))
            worker = nil
            backend = nil
        }
    }

    // MARK: - fixed crash points

    func testCrashAfterConsumeBeforeCompletion() throws {
        let rig = Rig()
        try rig.startWorker()
        rig.addWrites(5)
        _ = rig.worker.serviceOnceSynchronously()  // consumed and submitted, all held
        XCTAssertEqual(rig.backend.held.count, 5)
        XCTAssertEqual((0..<16).filter { rig.log.seq(of: UInt16($0)) != 0 }.count, 5)
        rig.worker = nil  // killed: nothing executed
        rig.backend = nil
        let r = try rig.recoverAndRestart()
        XCTAssertEqual(r.resubmit.count, 5)
        XCTAssertEqual(r.startAvail, 5)
        XCTAssertEqual(r.reconciled, 0)
        XCTAssertEqual(r.resubmit, Array(rig.outstanding.values.sorted { $0.id < $1.id }.map(\.request.head)),
                       "resubmitted in submission order")
        rig.drain()
        rig.verifyImage()
        XCTAssertEqual(rig.completedIDs.count, 5)
    }

    func testCrashBeforeConsume() throws {
        let rig = Rig()
        try rig.startWorker()
        rig.addWrites(3)
        rig.worker = nil  // killed before it looked at the ring
        let r = try rig.recoverAndRestart()
        XCTAssertEqual(r, InflightQueueLog.Recovery(startAvail: 0, resubmit: [], nextSeq: 1, reconciled: 0, usedIdx: 0))
        rig.drain()
        rig.verifyImage()
    }

    func testCrashBetweenPublishAndLogAtEveryStore() throws {
        // A batch of 6 completions: the crash falls after used.idx is published and
        // after 0...7 of the log's stores (6 clears, then the used index).
        for steps in 0...7 {
            let rig = Rig()
            try rig.startWorker()
            rig.addWrites(8)
            _ = rig.worker.serviceOnceSynchronously()
            rig.backend.release(6)
            rig.worker.crashDuringNextPublish(afterLogStores: steps)
            _ = rig.worker.serviceOnceSynchronously()
            XCTAssertTrue(rig.worker.hasCrashed)
            XCTAssertEqual(rig.driver.usedIndex, 6, "the batch was published before the crash")
            rig.collect()
            XCTAssertEqual(rig.completedIDs.count, 6)
            rig.worker = nil
            rig.backend = nil
            let r = try rig.recoverAndRestart()
            XCTAssertEqual(r.reconciled, steps >= 6 ? 0 : 6 - steps, "steps \(steps)")
            XCTAssertEqual(r.resubmit.count, 2, "only the two unfinished requests come back (steps \(steps))")
            XCTAssertEqual(r.startAvail, 8)
            XCTAssertEqual(rig.log.loggedUsedIdx, 6)
            rig.drain()
            rig.verifyImage()
            XCTAssertEqual(rig.completedIDs.count, 8)
        }
    }

    func testCrashMidBatchCompletedButUnpublished() throws {
        let rig = Rig()
        try rig.startWorker()
        rig.addWrites(6)
        _ = rig.worker.serviceOnceSynchronously()
        rig.backend.release(4, pick: { $0 - 1 })  // out of order
        // Reap and write used elements, but die before used.idx is stored.
        rig.worker.crashBeforeNextPublish()
        _ = rig.worker.serviceOnceSynchronously()  // used elements written, not published
        XCTAssertTrue(rig.worker.hasCrashed)
        XCTAssertEqual(rig.driver.usedIndex, 0)
        rig.worker = nil
        rig.backend = nil
        let r = try rig.recoverAndRestart()
        XCTAssertEqual(r.resubmit.count, 6, "unpublished completions are done again, never lost")
        rig.drain()
        rig.verifyImage()
        XCTAssertEqual(rig.completedIDs.count, 6)
    }

    func testRecoveryIsIdempotentAndSurvivesRepeatedCrashes() throws {
        let rig = Rig()
        try rig.startWorker()
        rig.addWrites(10)
        _ = rig.worker.serviceOnceSynchronously()
        rig.backend.release(7)
        rig.worker.crashDuringNextPublish(afterLogStores: 3)
        _ = rig.worker.serviceOnceSynchronously()
        rig.collect()
        rig.worker = nil
        let r1 = try XCTUnwrap(try rig.log.recover(queueIndex: 0, addresses: rig.driver.addresses, memory: rig.memory))
        let r2 = try XCTUnwrap(try rig.log.recover(queueIndex: 0, addresses: rig.driver.addresses, memory: rig.memory))
        XCTAssertEqual(r1.resubmit, r2.resubmit)
        XCTAssertEqual(r1.startAvail, r2.startAvail)
        XCTAssertEqual(r2.reconciled, 0)
        // Crash again right after recovery, before anything was resubmitted.
        try rig.startWorker(startAvail: r1.startAvail, resubmit: r1.resubmit, nextSeq: r1.nextSeq)
        rig.worker = nil
        let r3 = try rig.recoverAndRestart()
        XCTAssertEqual(r3.resubmit, r1.resubmit)
        rig.drain()
        rig.verifyImage()
        XCTAssertEqual(rig.completedIDs.count, 10)
    }

    func testResetForgetsEverything() throws {
        let rig = Rig()
        try rig.startWorker()
        rig.addWrites(4)
        _ = rig.worker.serviceOnceSynchronously()
        rig.log.reset(queueIndex: 0)
        XCTAssertNil(try rig.log.recover(queueIndex: 0, addresses: rig.driver.addresses, memory: rig.memory))
    }

    // MARK: - hostile logs

    func testGarbageAndForeignLogsAreRefused() throws {
        let rig = Rig()
        try rig.startWorker()
        let a = rig.driver.addresses
        func expectThrow(_ what: String, _ body: () -> Void) {
            let saved = Array(UnsafeRawBufferPointer(start: rig.region, count: 64 + 8 * 16))
            body()
            XCTAssertThrowsError(try rig.log.recover(queueIndex: 0, addresses: a, memory: rig.memory), what)
            saved.withUnsafeBytes { rig.region.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        expectThrow("magic") { rig.region.storeBytes(of: UInt64(1), as: UInt64.self) }
        expectThrow("version") { rig.region.storeBytes(of: UInt32(9), toByteOffset: 8, as: UInt32.self) }
        expectThrow("checksum") { rig.region.storeBytes(of: UInt64(0xdead), toByteOffset: 16, as: UInt64.self) }
        expectThrow("other queue") { rig.region.storeBytes(of: UInt16(3), toByteOffset: 12, as: UInt16.self) }
        expectThrow("logged used far behind") { rig.log.recordUsed(0x8000) }
        expectThrow("duplicate seq") {
            rig.log.markInflight(head: 1, seq: 7)
            rig.log.markInflight(head: 2, seq: 7)
        }
        expectThrow("more in flight than the driver made available") {
            for h in 0..<4 { rig.log.markInflight(head: UInt16(h), seq: UInt64(h + 1)) }
        }
        XCTAssertThrowsError(try rig.log.recover(
            queueIndex: 0, addresses: QueueAddresses(size: a.size, descTable: a.descTable + 4096,
                                                     availRing: a.availRing, usedRing: a.usedRing),
            memory: rig.memory)) { error in
            guard case InflightLogError.mismatch = error else { return XCTFail("\(error)") }
        }
        // Random garbage never traps.
        var rng = SeededRNG(seed: 42)
        for _ in 0..<2000 {
            let off = Int.random(in: 0..<(64 + 8 * 16), using: &rng)
            rig.region.storeBytes(of: UInt8.random(in: 0...255, using: &rng), toByteOffset: off, as: UInt8.self)
            _ = try? rig.log.recover(queueIndex: 0, addresses: a, memory: rig.memory)
        }
    }

    // MARK: - property: random crash points

    func testRandomCrashPointsNeverLoseOrDuplicate() throws {
        for seed in UInt64(1)...40 {
            var rng = SeededRNG(seed: seed &* 0x9E37_79B9)
            let rig = Rig()
            try rig.startWorker()
            var crashes = 0
            for _ in 0..<120 {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0...2: rig.addWrites(Int.random(in: 1...6, using: &rng))
                case 3...5: _ = rig.worker.serviceOnceSynchronously()
                case 6...7:
                    rig.backend.release(Int.random(in: 0...rig.backend.held.count, using: &rng),
                                        pick: { Int.random(in: 0..<$0, using: &rng) })
                case 8: rig.collect()
                default:
                    // Crash: either between two service passes, or inside a publish.
                    if Bool.random(using: &rng) {
                        let steps = Int.random(in: -1...17, using: &rng)
                        if steps < 0 { rig.worker.crashBeforeNextPublish() } else {
                            rig.worker.crashDuringNextPublish(afterLogStores: steps)
                        }
                        rig.backend.release(rig.backend.held.count)
                        _ = rig.worker.serviceOnceSynchronously()
                    }
                    rig.kill(rng: &rng)
                    rig.collect()
                    crashes += 1
                    do { try rig.recoverAndRestart() } catch {
                        XCTFail("seed \(seed): recovery failed: \(error)")
                        return
                    }
                }
            }
            rig.drain()
            rig.verifyImage()
            XCTAssertEqual(rig.completedIDs.count, rig.nextID, "seed \(seed)")
            XCTAssertGreaterThan(crashes, 0, "seed \(seed)")
        }
    }
}
