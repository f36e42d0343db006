import VirtioCore
import VirtioDriverSim
import XCTest

/// The descriptor-chain walker (`DescriptorChainWalker`), one test per rule:
/// chain shapes (direct, NEXT, indirect), the fatal structural errors that
/// make the device ask for a reset, and the request-level errors that only
/// spoil one request. Queue size 8 unless a test says otherwise.
final class DescriptorChainTests: XCTestCase {
    // MARK: chain shapes

    func testSingleReadableDescriptor() throws {
        let fx = try RingFixture()
        let b = fx.buffer(16)
        fx.desc(3, b, 16)
        let s = try fx.walk(3)
        fx.assertSegments([(b, 16)])
        XCTAssertEqual(s.readableBytes, 16)
        XCTAssertEqual(s.writableBytes, 0)
        XCTAssertEqual(s.writableStart, 1, "no writable segment: writableStart == count")
        XCTAssertNil(s.lastWritableByte, "nowhere to put a status byte")
        XCTAssertNil(s.error)
    }

    func testChainFollowsNextNotTableOrder() throws {
        let fx = try RingFixture()
        let h = fx.buffer(16), d = fx.buffer(512), st = fx.buffer(1)
        fx.desc(5, h, 16, flagNext, next: 2)
        fx.desc(2, d, 512, flagWrite | flagNext, next: 7)
        fx.desc(7, st, 1, flagWrite)
        fx.desc(6, fx.buffer(64), 64)  // not in the chain
        let s = try fx.walk(5)
        fx.assertSegments([(h, 16), (d, 512), (st, 1)])
        XCTAssertEqual(s.writableStart, 1)
        XCTAssertEqual(s.readableBytes, 16)
        XCTAssertEqual(s.writableBytes, 513)
        XCTAssertEqual(UnsafeMutableRawPointer(s.lastWritableByte), fx.memory.pointer(st))
        XCTAssertNil(s.error)
    }

    func testChainBuiltBySimulatedDriverMatchesItsBuffers() throws {
        let fx = try RingFixture()
        let blk = BlkRequestBuilder(driver: fx.driver)
        let r = try XCTUnwrap(blk.read(sector: 8, length: 2048, segments: 2))
        let s = try fx.walk(r.head)
        XCTAssertNil(s.error)
        XCTAssertEqual(s.count, 4, "header, 2 data segments, status")
        XCTAssertEqual(s.writableStart, 1)
        XCTAssertEqual(s.readableBytes, 16)
        XCTAssertEqual(s.writableBytes, 2048 + 1)
        XCTAssertEqual(fx.iovecs[1].0, fx.memory.pointer(r.dataIOVA))
        XCTAssertEqual(fx.iovecs[2].0, fx.memory.pointer(r.dataIOVA + 1024))
        XCTAssertEqual(UnsafeMutableRawPointer(s.lastWritableByte), fx.memory.pointer(r.statusIOVA))
    }

    func testChainOfExactlyQueueSizeDescriptorsIsAccepted() throws {
        let fx = try RingFixture(size: 8)
        let b = fx.buffer(8 * 32)
        for i: UInt16 in 0..<8 {
            fx.desc(i, b + UInt64(i) * 32, 32, i < 7 ? flagNext : 0, next: i + 1)
        }
        let s = try fx.walk(0)
        XCTAssertEqual(s.count, 8)
        XCTAssertEqual(s.readableBytes, 256)
    }

    func testDescriptorLoopIsFatal() throws {
        let fx = try RingFixture(size: 8)
        let b = fx.buffer(16)
        fx.desc(3, b, 16, flagNext, next: 3)
        XCTAssertQueueError(.chainTooLong, try fx.walk(3), "self loop")
        fx.desc(0, b, 16, flagNext, next: 1)
        fx.desc(1, b, 16, flagNext, next: 2)
        fx.desc(2, b, 16, flagNext, next: 0)
        XCTAssertQueueError(.chainTooLong, try fx.walk(0), "three-descriptor cycle")
        XCTAssertTrue(QueueError.chainTooLong.isFatal)
    }

    func testHeadOutOfRangeIsFatal() throws {
        let fx = try RingFixture(size: 8)
        XCTAssertQueueError(.headOutOfRange(8), try fx.walk(8))
        XCTAssertQueueError(.headOutOfRange(0xffff), try fx.walk(0xffff))
    }

    func testNextOutOfRangeIsFatal() throws {
        let fx = try RingFixture(size: 8)
        fx.desc(0, fx.buffer(16), 16, flagNext, next: 8)
        XCTAssertQueueError(.nextOutOfRange(8), try fx.walk(0))
        XCTAssertTrue(QueueError.nextOutOfRange(8).isFatal)
    }

    // MARK: indirect tables

    func testIndirectTableIsWalkedInsteadOfTheRing() throws {
        let fx = try RingFixture()
        let h = fx.buffer(16), d = fx.buffer(4096), st = fx.buffer(1)
        let r = try XCTUnwrap(fx.driver.add([SimBuffer(iova: h, length: 16, writable: false),
                                             SimBuffer(iova: d, length: 4096, writable: true),
                                             SimBuffer(iova: st, length: 1, writable: true)], indirect: true))
        XCTAssertEqual(fx.driver.freeDescriptors, 7, "one ring descriptor for the whole request")
        let s = try fx.walk(r)
        XCTAssertNil(s.error)
        fx.assertSegments([(h, 16), (d, 4096), (st, 1)])
        XCTAssertEqual(s.writableStart, 1)
        XCTAssertEqual(s.writableBytes, 4097)
        XCTAssertEqual(UnsafeMutableRawPointer(s.lastWritableByte), fx.memory.pointer(st))
    }

    func testIndirectDescriptorsWriteFlagIsIgnored() throws {
        let fx = try RingFixture()
        let t = fx.buffer(32), a = fx.buffer(16), st = fx.buffer(1)
        fx.desc(0, a, 16, flagNext, next: 1, table: t)
        fx.desc(1, st, 1, flagWrite, table: t)
        fx.desc(4, t, 32, flagIndirect | flagWrite)
        let s = try fx.walk(4)
        XCTAssertNil(s.error)
        fx.assertSegments([(a, 16), (st, 1)])
        XCTAssertEqual(s.readableBytes, 16, "direction comes from the table's entries")
    }

    func testDirectDescriptorsMayLeadIntoAnIndirectTable() throws {
        let fx = try RingFixture()
        let t = fx.buffer(32), h = fx.buffer(16), d = fx.buffer(64), st = fx.buffer(1)
        fx.desc(0, d, 64, flagWrite | flagNext, next: 1, table: t)
        fx.desc(1, st, 1, flagWrite, table: t)
        fx.desc(2, h, 16, flagNext, next: 6)
        fx.desc(6, t, 32, flagIndirect)
        let s = try fx.walk(2)
        XCTAssertNil(s.error)
        fx.assertSegments([(h, 16), (d, 64), (st, 1)])
        XCTAssertEqual(s.writableStart, 1)
    }

    func testIndirectWithoutTheFeatureIsFatal() throws {
        let fx = try RingFixture()
        let r = try XCTUnwrap(fx.driver.add([SimBuffer(iova: fx.buffer(16), length: 16, writable: false)],
                                            indirect: true))
        XCTAssertQueueError(.indirectNotNegotiated, try fx.walk(r, indirect: false))
        XCTAssertNoThrow(try fx.walk(r, indirect: true))
        XCTAssertTrue(QueueError.indirectNotNegotiated.isFatal)
    }

    func testNestedIndirectTableIsFatal() throws {
        let fx = try RingFixture()
        let inner = fx.buffer(16), outer = fx.buffer(32)
        fx.desc(0, fx.buffer(16), 16, table: inner)
        fx.desc(0, fx.buffer(16), 16, flagNext, next: 1, table: outer)
        fx.desc(1, inner, 16, flagIndirect, table: outer)
        fx.desc(0, outer, 32, flagIndirect)
        XCTAssertQueueError(.nestedIndirect, try fx.walk(0))
    }

    func testIndirectDescriptorWithNextIsFatal() throws {
        let fx = try RingFixture()
        let t = fx.buffer(16)
        fx.desc(0, fx.buffer(16), 16, table: t)
        fx.desc(1, fx.buffer(1), 1, flagWrite)
        fx.desc(0, t, 16, flagIndirect | flagNext, next: 1)
        XCTAssertQueueError(.indirectWithNext, try fx.walk(0))
    }

    func testIndirectTableLengthMustBeANonZeroMultipleOf16() throws {
        let fx = try RingFixture()
        let t = fx.buffer(64)
        for i: UInt16 in 0..<4 { fx.desc(i, fx.buffer(16), 16, i < 3 ? flagNext : 0, next: i + 1, table: t) }
        for bad: UInt32 in [0, 1, 15, 17, 40, 63] {
            fx.desc(0, t, bad, flagIndirect)
            XCTAssertQueueError(.badIndirectTable(address: t, length: bad), try fx.walk(0), "length \(bad)")
        }
        fx.desc(0, t, 64, flagIndirect)
        XCTAssertEqual(try fx.walk(0).count, 4)
    }

    func testIndirectTableMustBeMappedContiguously() throws {
        let fx = try RingFixture()
        let end = fx.memory.regions[0].iova + fx.memory.regions[0].size
        fx.desc(0, 0x1000, 16, flagIndirect)
        XCTAssertQueueError(.badIndirectTable(address: 0x1000, length: 16), try fx.walk(0), "unmapped")
        fx.desc(0, end - 16, 32, flagIndirect)
        XCTAssertQueueError(.badIndirectTable(address: end - 16, length: 32), try fx.walk(0), "runs off the end")
        // Mapped on both sides but split across two regions: not one table in this process.
        fx.memory.addRegion(iova: end, size: 4096)
        fx.desc(0, end - 16, 32, flagIndirect)
        XCTAssertQueueError(.badIndirectTable(address: end - 16, length: 32), try fx.walk(0), "split mapping")
    }

    func testIndirectTableMayHoldUpToQueueSizeEntries() throws {
        let fx = try RingFixture(size: 8)
        let t = fx.buffer(9 * 16), b = fx.buffer(16)
        for i: UInt16 in 0..<9 { fx.desc(i, b, 16, i < 8 ? flagNext : 0, next: i + 1, table: t) }
        fx.desc(0, t, 9 * 16, flagIndirect)
        XCTAssertQueueError(.badIndirectTable(address: t, length: 144), try fx.walk(0), "9 entries > queue size 8")
        fx.desc(7, b, 16, 0, table: t)  // end the chain at entry 7
        fx.desc(0, t, 8 * 16, flagIndirect)
        XCTAssertEqual(try fx.walk(0).count, 8)
    }

    func testChainThroughIndirectTableMayNotExceedQueueSize() throws {
        // Two direct descriptors use 2 of the 8-descriptor budget: an indirect
        // table of 7 entries would make the chain 9 long.
        let fx = try RingFixture(size: 8)
        let t = fx.buffer(7 * 16), b = fx.buffer(16)
        for i: UInt16 in 0..<7 { fx.desc(i, b, 16, i < 6 ? flagNext : 0, next: i + 1, table: t) }
        fx.desc(0, b, 16, flagNext, next: 1)
        fx.desc(1, b, 16, flagNext, next: 2)
        fx.desc(2, t, 7 * 16, flagIndirect)
        XCTAssertQueueError(.badIndirectTable(address: t, length: 112), try fx.walk(0))
        fx.desc(2, t, 6 * 16, flagIndirect)  // 2 + 6 = 8 fits; entry 5 still says NEXT -> 6, past the table
        XCTAssertQueueError(.nextOutOfRange(6), try fx.walk(0))
        fx.desc(5, b, 16, 0, table: t)
        XCTAssertEqual(try fx.walk(0).count, 8)
    }

    func testNextOutOfRangeInsideIndirectTableIsFatal() throws {
        let fx = try RingFixture(size: 8)
        let t = fx.buffer(32)
        fx.desc(0, fx.buffer(16), 16, flagNext, next: 2, table: t)  // table has entries 0 and 1 only
        fx.desc(1, fx.buffer(1), 1, flagWrite, table: t)
        fx.desc(4, t, 32, flagIndirect)
        XCTAssertQueueError(.nextOutOfRange(2), try fx.walk(4))
    }

    func testLoopInsideIndirectTableIsFatal() throws {
        let fx = try RingFixture(size: 8)
        let t = fx.buffer(32), b = fx.buffer(16)
        fx.desc(0, b, 16, flagNext, next: 1, table: t)
        fx.desc(1, b, 16, flagNext, next: 0, table: t)
        fx.desc(0, t, 32, flagIndirect)
        XCTAssertQueueError(.chainTooLong, try fx.walk(0))
    }

    // MARK: request-level errors (the request fails, the queue goes on)

    func testReadableAfterWritableSpoilsTheRequest() throws {
        let fx = try RingFixture()
        let a = fx.buffer(16), w = fx.buffer(16), r = fx.buffer(16)
        fx.desc(0, a, 16, flagNext, next: 1)
        fx.desc(1, w, 16, flagWrite | flagNext, next: 2)
        fx.desc(2, r, 16, 0)
        let s = try fx.walk(0)
        XCTAssertEqual(s.error, .readableAfterWritable)
        XCTAssertFalse(QueueError.readableAfterWritable.isFatal)
        fx.assertSegments([(a, 16), (w, 16)])
        XCTAssertEqual(s.readableBytes, 16, "the late readable buffer is not taken")
    }

    func testReadableAfterWritableInsideIndirectTable() throws {
        let fx = try RingFixture()
        let t = fx.buffer(32)
        fx.desc(0, fx.buffer(16), 16, flagWrite | flagNext, next: 1, table: t)
        fx.desc(1, fx.buffer(16), 16, 0, table: t)
        fx.desc(3, t, 32, flagIndirect)
        XCTAssertEqual(try fx.walk(3).error, .readableAfterWritable)
    }

    func testZeroLengthBufferSpoilsTheRequestButKeepsTheStatusByte() throws {
        let fx = try RingFixture()
        let h = fx.buffer(16), st = fx.buffer(1)
        fx.desc(0, h, 16, flagNext, next: 1)
        fx.desc(1, fx.buffer(16), 0, flagWrite | flagNext, next: 2)
        fx.desc(2, st, 1, flagWrite)
        let s = try fx.walk(0)
        XCTAssertEqual(s.error, .zeroLengthBuffer)
        XCTAssertFalse(QueueError.zeroLengthBuffer.isFatal)
        XCTAssertEqual(UnsafeMutableRawPointer(s.lastWritableByte), fx.memory.pointer(st),
                       "an IOERR status can still be written")
    }

    func testWrappingBufferSpoilsTheRequest() throws {
        let fx = try RingFixture()
        let st = fx.buffer(1)
        fx.desc(0, 0xffff_ffff_ffff_fff0, 32, flagWrite | flagNext, next: 1)
        fx.desc(1, st, 1, flagWrite)
        let s = try fx.walk(0)
        XCTAssertEqual(s.error, .bufferWraps(address: 0xffff_ffff_ffff_fff0, length: 32))
        XCTAssertEqual(s.count, 0)
        XCTAssertNotNil(s.lastWritableByte)
    }

    func testBufferOutsideGuestMemorySpoilsTheRequest() throws {
        let fx = try RingFixture()
        let end = fx.memory.regions[0].iova + fx.memory.regions[0].size
        fx.desc(0, 0x1000, 512, flagNext, next: 1)
        fx.desc(1, fx.buffer(1), 1, flagWrite)
        XCTAssertEqual(try fx.walk(0).error, .bufferUnmapped(address: 0x1000, length: 512))
        XCTAssertFalse(QueueError.bufferUnmapped(address: 0, length: 0).isFatal)
        // Starts inside memory, runs past its end.
        fx.desc(0, end - 256, 512, 0)
        XCTAssertEqual(try fx.walk(0).error, .bufferUnmapped(address: end - 256, length: 512))
    }

    func testWritableBufferInReadOnlyMemoryIsUnmapped() throws {
        let fx = try RingFixture()
        fx.memory.addRegion(iova: 0x2_0000_0000, size: 4096, writable: false)
        let ro = fx.buffer(64, region: 1)
        fx.desc(0, ro, 64, flagNext, next: 1)  // device reads it: fine
        fx.desc(1, fx.buffer(1), 1, flagWrite)
        let ok = try fx.walk(0)
        XCTAssertNil(ok.error)
        XCTAssertEqual(ok.readableBytes, 64)
        fx.desc(0, ro, 64, flagWrite)  // device would write it: refused
        XCTAssertEqual(try fx.walk(0).error, .bufferUnmapped(address: ro, length: 64))
        XCTAssertNil(fx.segments.lastWritableByte, "no status byte in read-only memory")
    }

    func testBufferSpanningAdjacentMappingsBecomesTwoSegments() throws {
        let fx = try RingFixture()
        let end = fx.memory.regions[0].iova + fx.memory.regions[0].size
        fx.memory.addRegion(iova: end, size: 4096)
        fx.desc(0, end - 100, 300, flagWrite)
        let s = try fx.walk(0)
        XCTAssertNil(s.error)
        XCTAssertEqual(s.count, 2)
        XCTAssertEqual(fx.iovecs[0].0, fx.memory.pointer(end - 100))
        XCTAssertEqual(fx.iovecs[0].1, 100)
        XCTAssertEqual(fx.iovecs[1].0, fx.memory.pointer(end))
        XCTAssertEqual(fx.iovecs[1].1, 200)
        XCTAssertEqual(s.writableBytes, 300)
        XCTAssertEqual(UnsafeMutableRawPointer(s.lastWritableByte), fx.memory.pointer(end + 199))
    }

    func testMoreSegmentsThanCapacitySpoilsTheRequest() throws {
        let fx = try RingFixture(capacity: 2)
        let b = fx.buffer(48)
        fx.desc(0, b, 16, flagNext, next: 1)
        fx.desc(1, b + 16, 16, flagNext, next: 2)
        fx.desc(2, b + 32, 16, flagWrite)
        let s = try fx.walk(0)
        XCTAssertEqual(s.error, .tooManySegments)
        XCTAssertEqual(s.count, 2, "never writes past the storage")
    }

    func testFirstRequestErrorWinsAndStopsCollecting() throws {
        let fx = try RingFixture()
        fx.desc(0, fx.buffer(16), 0, flagNext, next: 1)
        fx.desc(1, 0x1000, 16, flagNext, next: 2)
        fx.desc(2, fx.buffer(16), 16, flagNext, next: 3)
        fx.desc(3, fx.buffer(1), 1, flagWrite)
        let s = try fx.walk(0)
        XCTAssertEqual(s.error, .zeroLengthBuffer)
        XCTAssertEqual(s.count, 0, "nothing appended after the first problem")
    }

    func testStructureIsStillCheckedAfterARequestError() throws {
        let fx = try RingFixture()
        fx.desc(0, fx.buffer(16), 0, flagNext, next: 1)  // zero length: request error
        fx.desc(1, fx.buffer(16), 16, flagNext, next: 1)  // then a loop: fatal
        XCTAssertQueueError(.chainTooLong, try fx.walk(0))
        fx.desc(1, fx.buffer(16), 16, flagNext, next: 9)
        XCTAssertQueueError(.nextOutOfRange(9), try fx.walk(0))
    }

    func testStatusByteIsTheLastByteOfTheLastDescriptorOnlyIfWritable() throws {
        let fx = try RingFixture()
        let d = fx.buffer(64)
        fx.desc(0, d, 64, flagWrite)
        XCTAssertEqual(UnsafeMutableRawPointer(try fx.walk(0).lastWritableByte), fx.memory.pointer(d + 63))
        fx.desc(0, d, 32, flagWrite | flagNext, next: 1)
        fx.desc(1, d + 32, 32, 0)
        XCTAssertNil(try fx.walk(0).lastWritableByte, "last descriptor is device-readable")
        fx.desc(1, 0x1000, 32, flagWrite)
        XCTAssertNil(try fx.walk(0).lastWritableByte, "last descriptor unmapped")
    }

    func testReusedSegmentsStartClean() throws {
        let fx = try RingFixture()
        fx.desc(0, fx.buffer(16), 16, flagNext, next: 1)
        fx.desc(1, 0x1000, 16, flagWrite)
        XCTAssertNotNil(try fx.walk(0).error)
        let b = fx.buffer(8)
        fx.desc(2, b, 8, flagWrite)
        let s = try fx.walk(2)
        XCTAssertNil(s.error)
        fx.assertSegments([(b, 8)])
        XCTAssertEqual(s.readableBytes, 0)
        XCTAssertEqual(s.writableBytes, 8)
        XCTAssertEqual(s.writableStart, 0)
    }

    // MARK: error classes

    func testOnlyRequestLevelErrorsAreNonFatal() {
        let requestLevel: [QueueError] = [.zeroLengthBuffer, .bufferWraps(address: 1, length: 2),
                                          .bufferUnmapped(address: 1, length: 2), .tooManySegments,
                                          .readableAfterWritable]
        let ringLevel: [QueueError] = [.ringUnmapped(area: "used", address: 0), .availIndexRunaway(avail: 1, lastSeen: 0),
                                       .headOutOfRange(1), .headInFlight(1), .nextOutOfRange(1), .chainTooLong,
                                       .nestedIndirect, .indirectNotNegotiated, .indirectWithNext,
                                       .badIndirectTable(address: 0, length: 0)]
        for e in requestLevel { XCTAssertFalse(e.isFatal, "\(e)") }
        for e in ringLevel { XCTAssertTrue(e.isFatal, "\(e) must stop the queue (NEEDS_RESET)") }
    }

    func testContiguousGuestRangesOnly() {
        let m = SimulatedGuestMemory(iova: 0x1000_0000, size: 4096)
        m.addRegion(iova: 0x1000_1000, size: 4096)
        m.addRegion(iova: 0x2000_0000, size: 4096, writable: false)
        XCTAssertEqual(m.contiguous(0x1000_0000, length: 4096, write: true), m.pointer(0x1000_0000))
        XCTAssertNil(m.contiguous(0x1000_0000, length: 0, write: false), "zero length")
        XCTAssertNil(m.contiguous(0x1000_0f00, length: 0x200, write: false), "split across two mappings")
        XCTAssertNil(m.contiguous(0xffff_ffff_ffff_fff0, length: 0x20, write: false), "wraps")
        XCTAssertNotNil(m.contiguous(0x2000_0000, length: 16, write: false))
        XCTAssertNil(m.contiguous(0x2000_0000, length: 16, write: true), "read-only mapping")
    }
}
