import BlockBackends
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// Every malformed-chain category of DESIGN.md §2: the engine answers with a
/// status byte (IOERR/UNSUPP), or stops the queue (NEEDS_RESET), never crashes.
final class MalformedChainTests: XCTestCase {
    func harness(eventIdx: Bool = true, indirectFeature: Bool = true) throws -> EngineHarness {
        try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 4 << 20), queueSize: 16,
                          eventIdx: eventIdx, indirectFeature: indirectFeature)
    }

    /// Header + `middle` + status, built by hand with raw descriptors from index 0.
    func rawChain(_ h: EngineHarness, _ descs: [(UInt64, UInt32, UInt16, UInt16)]) {
        let d = h.drivers[0]
        for (i, x) in descs.enumerated() {
            d.writeDescriptor(UInt16(i), iova: x.0, length: x.1, flags: x.2, next: x.3)
        }
        d.stage(head: 0)
        d.publish()
    }

    func header(_ h: EngineHarness, type: UInt32 = BlkRequestType.read, sector: UInt64 = 0) -> UInt64 {
        h.builders[0].header(type: type, sector: sector)
    }

    let next = SplitRingLayout.descFlagNext
    let write = SplitRingLayout.descFlagWrite
    let indirect = SplitRingLayout.descFlagIndirect

    func testMissingStatusByteGetsUsedEntryWithZeroLength() throws {
        let h = try harness()
        defer { h.stop() }
        let hdr = header(h)
        let data = h.memory.allocate(512)
        // Last descriptor is device-readable: there is nowhere to put a status.
        rawChain(h, [(hdr, 16, next, 1), (data, 512, 0, 0)])
        let used = h.complete()
        XCTAssertEqual(used, [SimUsed(head: 0, length: 0)])
        XCTAssertFalse(h.workers[0].control.needsReset)
        // The queue still works afterwards.
        XCTAssertEqual(h.run { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
    }

    func testWrongDirectionIsIOError() throws {
        let h = try harness()
        defer { h.stop() }
        // Read request whose data buffer is device-readable, then status.
        let hdr = header(h)
        let data = h.memory.allocate(512)
        let status = h.builders[0].status()
        rawChain(h, [(hdr, 16, next, 1), (data, 512, next, 2), (status, 1, write, 0)])
        XCTAssertEqual(h.complete().first?.head, 0)
        XCTAssertEqual(h.memory.read(status, count: 1), [BlkStatus.ioError])
        // Write request with a writable data buffer before the status.
        let hdr2 = header(h, type: BlkRequestType.write)
        let st2 = h.builders[0].status()
        rawChain(h, [(hdr2, 16, next, 1), (data, 512, write | next, 2), (st2, 1, write, 0)])
        XCTAssertEqual(h.complete().count, 1)
        XCTAssertEqual(h.memory.read(st2, count: 1), [BlkStatus.ioError])
        // Readable descriptor after a writable one.
        let st3 = h.builders[0].status()
        rawChain(h, [(hdr, 16, next, 1), (data, 512, write | next, 2), (data, 512, next, 3), (st3, 1, write, 0)])
        XCTAssertEqual(h.complete().count, 1)
        XCTAssertEqual(h.memory.read(st3, count: 1), [BlkStatus.ioError])
        // Header shorter than 16 bytes.
        let st4 = h.builders[0].status()
        rawChain(h, [(hdr, 8, next, 1), (st4, 1, write, 0)])
        XCTAssertEqual(h.complete().count, 1)
        XCTAssertEqual(h.memory.read(st4, count: 1), [BlkStatus.ioError])
        XCTAssertFalse(h.workers[0].control.needsReset)
    }

    func testZeroLengthWrappingAndUnmappedBuffersAreIOErrors() throws {
        let h = try harness()
        defer { h.stop() }
        let hdr = header(h)
        let cases: [(UInt64, UInt32)] = [
            (h.memory.allocate(512), 0),            // zero length
            (UInt64.max - 100, 512),                 // wraps
            (0x10, 512),                             // below any mapping
            (0x1_0000_0000 + (64 << 20) - 256, 512), // runs off the end of the mapping
        ]
        for (addr, len) in cases {
            let st = h.builders[0].status()
            rawChain(h, [(hdr, 16, next, 1), (addr, len, write | next, 2), (st, 1, write, 0)])
            XCTAssertEqual(h.complete().count, 1, "addr \(addr) len \(len)")
            XCTAssertEqual(h.memory.read(st, count: 1), [BlkStatus.ioError], "addr \(addr) len \(len)")
        }
        // An unmapped status byte: nothing can be reported, the head still comes back.
        rawChain(h, [(hdr, 16, next, 1), (0x20, 1, write, 0)])
        XCTAssertEqual(h.complete(), [SimUsed(head: 0, length: 0)])
        XCTAssertFalse(h.workers[0].control.needsReset)
    }

    func testDescriptorLoopNeedsReset() throws {
        let h = try harness()
        defer { h.stop() }
        let hdr = header(h)
        rawChain(h, [(hdr, 16, next, 1), (hdr, 16, next, 0)])
        XCTAssertTrue(h.waitNeedsReset())
    }

    func testChainLongerThanQueueNeedsReset() throws {
        let h = try harness()
        defer { h.stop() }
        let hdr = header(h)
        // 16-entry queue; an indirect table with 17 entries.
        let table = h.memory.allocate(17 * 16)
        for i in 0..<17 {
            h.drivers[0].writeDescriptor(UInt16(i), iova: hdr, length: 16, flags: i < 16 ? next : write,
                                         next: UInt16(i + 1), table: table)
        }
        rawChain(h, [(table, 17 * 16, indirect, 0)])
        XCTAssertTrue(h.waitNeedsReset())
    }

    func testNestedIndirectNeedsReset() throws {
        let h = try harness()
        defer { h.stop() }
        let inner = h.memory.allocate(16)
        let outer = h.memory.allocate(16)
        h.drivers[0].writeDescriptor(0, iova: inner, length: 16, flags: indirect, next: 0, table: outer)
        rawChain(h, [(outer, 16, indirect, 0)])
        XCTAssertTrue(h.waitNeedsReset())
    }

    func testBadIndirectTablesNeedReset() throws {
        for (len, flags) in [(UInt32(0), indirect), (UInt32(24), indirect), (UInt32(16), indirect | SplitRingLayout.descFlagNext)] {
            let h = try harness()
            let table = h.memory.allocate(32)
            rawChain(h, [(table, len, flags, 1), (table, 16, write, 0)])
            XCTAssertTrue(h.waitNeedsReset(), "len \(len) flags \(flags)")
            h.stop()
        }
        // Unmapped table.
        let h = try harness()
        rawChain(h, [(0x40, 32, indirect, 0)])
        XCTAssertTrue(h.waitNeedsReset())
        h.stop()
        // INDIRECT_DESC not negotiated.
        let h2 = try harness(indirectFeature: false)
        defer { h2.stop() }
        XCTAssertNotNil(h2.builders[0].read(sector: 0, length: 512).map { _ in () })
        let hdr = header(h2)
        let table = h2.memory.allocate(32)
        h2.drivers[0].writeDescriptor(0, iova: hdr, length: 16, flags: next, next: 1, table: table)
        h2.drivers[0].writeDescriptor(1, iova: h2.builders[0].status(), length: 1, flags: write, next: 0, table: table)
        h2.drivers[0].writeDescriptor(5, iova: table, length: 32, flags: indirect, next: 0)
        h2.drivers[0].stage(head: 5)
        h2.drivers[0].publish()
        XCTAssertTrue(h2.waitNeedsReset())
    }

    func testHeadAndNextOutOfRangeNeedReset() throws {
        let h = try harness()
        h.drivers[0].stage(head: 16)
        h.drivers[0].publish()
        XCTAssertTrue(h.waitNeedsReset())
        h.stop()

        let h2 = try harness()
        defer { h2.stop() }
        rawChain(h2, [(header(h2), 16, next, 99)])
        XCTAssertTrue(h2.waitNeedsReset())
    }

    func testAvailIndexRunawayNeedsReset() throws {
        let h = try harness()
        defer { h.stop() }
        h.drivers[0].forceAvailIndex(17) // 17 > queue size 16
        XCTAssertTrue(h.waitNeedsReset())
    }

    func testHeadMadeAvailableTwiceWhileInFlightNeedsReset() throws {
        // The sync-less memory backend completes inline, so use a worker that is not started
        // yet and publish the same head twice in one batch.
        let h = try EngineHarness(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queueSize: 16,
                                  startWorkers: false)
        let r = h.builders[0].read(sector: 0, length: 512)!
        h.drivers[0].stage(head: r.head)
        h.drivers[0].publish()
        h.workers[0].start()
        defer { h.stop() }
        // Either the second copy is seen while the first is in flight (NEEDS_RESET), or
        // the first completed before (two used entries). Both are legal; a crash is not.
        h.drivers[0].kick(force: true)
        usleep(200_000)
        let used = h.drivers[0].collectUsed()
        XCTAssertTrue(h.workers[0].control.needsReset || used.count == 2, "used \(used)")
    }

    func testRingsOutsideMemoryNeedReset() throws {
        let backend = try MemoryBackendFactory(capacityBytes: 1 << 20)
        let h = try EngineHarness(backend: backend, queueSize: 16, startWorkers: false)
        let bad = try QueueWorkerFactoryForTest.worker(harness: h, backend: backend,
                                                       addresses: QueueAddresses(size: 16, descTable: 0x1000,
                                                                                 availRing: 0x2000, usedRing: 0x3000))
        bad.start()
        XCTAssertTrue(bad.control.needsReset || { usleep(100_000); return bad.control.needsReset }())
        bad.control.stop()
    }
}

import BlockEngine
import Logging

enum QueueWorkerFactoryForTest {
    static func worker(harness h: EngineHarness, backend: any BlockBackendFactory,
                       addresses: QueueAddresses) throws -> QueueWorker<SimulatedGuestMemory> {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try QueueWorker(config: QueueWorkerConfig(queueIndex: 0, addresses: addresses,
                                                         features: h.parameters.offeredFeatures),
                               memory: h.memory, backend: try backend.makeQueueBackend(queueIndex: 0, depth: 16),
                               parameters: h.parameters, sink: h.sink, kickFD: h.drivers[0].kickFD, logger: logger)
    }
}
