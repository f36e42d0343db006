import Glibc
import VirtioCore
import VirtioDriverSim
import XCTest

let flagNext = SplitRingLayout.descFlagNext
let flagWrite = SplitRingLayout.descFlagWrite
let flagIndirect = SplitRingLayout.descFlagIndirect

/// One split virtqueue under test: the simulated driver's rings in simulated
/// guest memory, the device's `SplitQueue` over them, and one reusable
/// `ChainSegments` for the chain walker. Raw accessors read and write ring
/// fields the way a (possibly malicious) driver would, so each test can set up
/// exactly the state its ring rule is about.
final class RingFixture {
    let memory: SimulatedGuestMemory
    let driver: SimulatedDriver
    var queue: SplitQueue
    let storage: UnsafeMutablePointer<iovec>
    var segments: ChainSegments

    /// `startAvail` sets both the driver's avail.idx and the device's resume
    /// point; `usedIdx` is what used.idx holds before the queue is built.
    init(size: UInt16 = 8, eventIdx: Bool = true, capacity: Int = 16, startAvail: UInt16 = 0,
         usedIdx: UInt16 = 0) throws {
        memory = SimulatedGuestMemory()
        driver = SimulatedDriver(memory: memory, size: size, eventIdx: eventIdx)
        if startAvail != 0 { driver.forceAvailIndex(startAvail) }
        memory.pointer(driver.addresses.usedRing + 2).storeBytes(of: usedIdx.littleEndian, as: UInt16.self)
        queue = try SplitQueue(addresses: driver.addresses, memory: memory, eventIdx: eventIdx,
                               startAvail: startAvail)
        storage = .allocate(capacity: capacity)
        segments = ChainSegments(storage: storage, capacity: capacity)
    }

    deinit { storage.deallocate() }

    var size: UInt16 { driver.size }

    // MARK: descriptors and chains

    /// A fresh buffer in guest memory; returns its IOVA.
    func buffer(_ length: UInt64, region: Int = 0) -> UInt64 {
        memory.allocate(length, alignment: 16, region: region)
    }

    /// Writes descriptor `index` of the queue's table (or of the indirect table at `table`).
    func desc(_ index: UInt16, _ iova: UInt64, _ length: UInt32, _ flags: UInt16 = 0, next: UInt16 = 0,
              table: UInt64? = nil) {
        driver.writeDescriptor(index, iova: iova, length: length, flags: flags, next: next, table: table)
    }

    /// Walks the chain at `head` into the fixture's segments.
    @discardableResult
    func walk(_ head: UInt16, indirect: Bool = true) throws(QueueError) -> ChainSegments {
        try DescriptorChainWalker.walk(head: head, table: queue.descriptorTable, queueSize: queue.size,
                                       memory: memory, indirectAllowed: indirect, into: &segments)
        return segments
    }

    /// (host pointer, length) of every segment the last walk produced.
    var iovecs: [(UnsafeMutableRawPointer?, Int)] {
        (0..<segments.count).map { (segments.storage[$0].iov_base, segments.storage[$0].iov_len) }
    }

    /// Asserts the last walk produced exactly these (IOVA, length) segments, in order.
    func assertSegments(_ expected: [(UInt64, Int)], file: StaticString = #filePath, line: UInt = #line) {
        let got = iovecs
        XCTAssertEqual(got.count, expected.count, "segment count", file: file, line: line)
        for (i, (g, e)) in zip(got, expected).enumerated() {
            XCTAssertEqual(g.0, memory.pointer(e.0), "segment \(i) base", file: file, line: line)
            XCTAssertEqual(g.1, e.1, "segment \(i) length", file: file, line: line)
        }
    }

    // MARK: raw ring fields

    var availPtr: UnsafeMutableRawPointer { memory.pointer(driver.addresses.availRing) }
    var usedPtr: UnsafeMutableRawPointer { memory.pointer(driver.addresses.usedRing) }

    /// used.idx as it is in memory.
    var usedIdx: UInt16 { UInt16(littleEndian: usedPtr.load(fromByteOffset: 2, as: UInt16.self)) }
    /// used.flags as it is in memory.
    var usedFlags: UInt16 { UInt16(littleEndian: usedPtr.load(as: UInt16.self)) }
    /// avail_event (after the used ring), written by the device under EVENT_IDX.
    var availEvent: UInt16 {
        UInt16(littleEndian: usedPtr.load(fromByteOffset: 4 + 8 * Int(size), as: UInt16.self))
    }
    /// (id, len) of used ring slot `slot`.
    func usedElement(slot: Int) -> (id: UInt32, len: UInt32) {
        let p = usedPtr + 4 + 8 * slot
        return (UInt32(littleEndian: p.load(as: UInt32.self)),
                UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self)))
    }

    /// used_event (after the avail ring), written by the driver under EVENT_IDX.
    func setUsedEvent(_ v: UInt16) {
        availPtr.storeBytes(of: v.littleEndian, toByteOffset: 4 + 2 * Int(size), as: UInt16.self)
    }

    func setAvailFlags(_ v: UInt16) { availPtr.storeBytes(of: v.littleEndian, as: UInt16.self) }

    /// Stages `heads` in the avail ring and publishes them in one avail.idx store.
    func makeAvailable(_ heads: [UInt16]) {
        for h in heads { driver.stage(head: h) }
        driver.publish()
    }

    /// Adds `n` used elements (head i, length 100 + i), publishes them and
    /// returns the interrupt decision.
    func publishAndDecide(_ n: Int) -> Bool {
        for i in 0..<n { queue.addUsed(head: UInt16(i), length: UInt32(100 + i)) }
        queue.publishUsed()
        return queue.shouldInterrupt()
    }
}

/// Asserts that `body` throws exactly `expected`.
func XCTAssertQueueError<T>(_ expected: QueueError, _ body: @autoclosure () throws -> T,
                            _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), message, file: file, line: line) { error in
        XCTAssertEqual(error as? QueueError, expected, message, file: file, line: line)
    }
}
