import VirtioCore
import VirtioDriverSim
import XCTest

/// Device side of one split virtqueue (`SplitQueue`), one test per ring rule:
/// setup, avail consumption, used publication, resume and remap. The driver
/// side is `SimulatedDriver` in `SimulatedGuestMemory`; malformed states are
/// written through its raw accessors.
final class SplitQueueTests: XCTestCase {
    // MARK: setup

    func testRingAreaSizesFollowTheSpec() {
        // virtio 1.x 2.7: 16-byte descriptors; avail = flags, idx, ring[n], used_event;
        // used = flags, idx, ring[n] of 8-byte (id, len), avail_event.
        XCTAssertEqual(SplitRingLayout.descTableBytes(256), 4096)
        XCTAssertEqual(SplitRingLayout.availBytes(256), 6 + 2 * 256)
        XCTAssertEqual(SplitRingLayout.usedBytes(256), 6 + 8 * 256)
        XCTAssertEqual(SplitRingLayout.descTableBytes(32768), 512 * 1024)
    }

    func testQueueSizeMustBeANonZeroPowerOfTwo() throws {
        let m = SimulatedGuestMemory()
        func addresses(_ size: UInt16) -> QueueAddresses {
            QueueAddresses(size: size, descTable: m.allocate(SplitRingLayout.descTableBytes(size)),
                           availRing: m.allocate(SplitRingLayout.availBytes(size)),
                           usedRing: m.allocate(SplitRingLayout.usedBytes(size)))
        }
        for bad: UInt16 in [0, 3, 6, 100, 0xffff] {
            XCTAssertQueueError(.headOutOfRange(bad), try SplitQueue(addresses: addresses(bad), memory: m,
                                                                     eventIdx: true), "size \(bad)")
        }
        for good: UInt16 in [1, 2, 256, 32768] {
            let q = try SplitQueue(addresses: addresses(good), memory: m, eventIdx: true)
            XCTAssertEqual(q.size, good)
        }
    }

    func testEveryRingAreaMustBeMappedContiguously() throws {
        let m = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 1 << 20)
        let end: UInt64 = 0x1_0000_0000 + (1 << 20)
        let d = m.allocate(SplitRingLayout.descTableBytes(8))
        let a = m.allocate(SplitRingLayout.availBytes(8))
        let u = m.allocate(SplitRingLayout.usedBytes(8))
        func make(_ d: UInt64, _ a: UInt64, _ u: UInt64) throws {
            _ = try SplitQueue(addresses: QueueAddresses(size: 8, descTable: d, availRing: a, usedRing: u),
                               memory: m, eventIdx: true)
        }
        XCTAssertNoThrow(try make(d, a, u))
        XCTAssertQueueError(.ringUnmapped(area: "descriptor", address: 0x1000), try make(0x1000, a, u))
        XCTAssertQueueError(.ringUnmapped(area: "avail", address: 0x1000), try make(d, 0x1000, u))
        XCTAssertQueueError(.ringUnmapped(area: "used", address: 0x1000), try make(d, a, 0x1000))
        // Starting inside memory is not enough: the whole area must be there.
        XCTAssertQueueError(.ringUnmapped(area: "descriptor", address: end - 64), try make(end - 64, a, u))
        XCTAssertQueueError(.ringUnmapped(area: "avail", address: end - 8), try make(d, end - 8, u))
        XCTAssertQueueError(.ringUnmapped(area: "used", address: end - 32), try make(d, a, end - 32))
    }

    func testUsedRingMustBeWritableButDriverAreasMayBeReadOnly() throws {
        let m = SimulatedGuestMemory()
        m.addRegion(iova: 0x2_0000_0000, size: 1 << 16, writable: false)
        let dRO = m.allocate(SplitRingLayout.descTableBytes(8), region: 1)
        let aRO = m.allocate(SplitRingLayout.availBytes(8), region: 1)
        let uRO = m.allocate(SplitRingLayout.usedBytes(8), alignment: 4, region: 1)
        let uRW = m.allocate(SplitRingLayout.usedBytes(8), alignment: 4)
        XCTAssertNoThrow(try SplitQueue(addresses: QueueAddresses(size: 8, descTable: dRO, availRing: aRO,
                                                                  usedRing: uRW), memory: m, eventIdx: true))
        XCTAssertQueueError(.ringUnmapped(area: "used", address: uRO),
                            try SplitQueue(addresses: QueueAddresses(size: 8, descTable: dRO, availRing: aRO,
                                                                     usedRing: uRO), memory: m, eventIdx: true))
    }

    // MARK: avail ring

    func testHeadsArePoppedInAvailRingOrder() throws {
        let fx = try RingFixture()
        XCTAssertEqual(try fx.queue.pendingCount(), 0)
        fx.makeAvailable([5, 2, 7, 0])
        XCTAssertEqual(try fx.queue.pendingCount(), 4)
        var popped: [UInt16] = []
        for _ in 0..<4 { popped.append(try fx.queue.popHead()) }
        XCTAssertEqual(popped, [5, 2, 7, 0], "avail order, not index order")
        XCTAssertEqual(fx.queue.lastAvailIdx, 4)
        XCTAssertEqual(try fx.queue.pendingCount(), 0)
    }

    func testOnlyHeadsPublishedThroughAvailIdxArePending() throws {
        let fx = try RingFixture()
        fx.driver.stage(head: 1)
        fx.driver.stage(head: 2)
        XCTAssertEqual(try fx.queue.pendingCount(), 0, "staged but avail.idx not yet stored")
        fx.driver.publish()
        XCTAssertEqual(try fx.queue.pendingCount(), 2)
        XCTAssertEqual(try fx.queue.popHead(), 1)
        XCTAssertEqual(try fx.queue.pendingCount(), 1)
    }

    func testAvailIndexWrapsAt16Bits() throws {
        let fx = try RingFixture(size: 8, startAvail: 0xfffd)
        // Slots 0xfffd & 7 = 5, 6, 7, then 0, 1: both the ring slot and the 16-bit index wrap.
        fx.makeAvailable([1, 2, 3, 4, 5])
        XCTAssertEqual(UInt16(littleEndian: fx.availPtr.load(fromByteOffset: 2, as: UInt16.self)), 0x0002)
        XCTAssertEqual(try fx.queue.pendingCount(), 5)
        var popped: [UInt16] = []
        for _ in 0..<5 { popped.append(try fx.queue.popHead()) }
        XCTAssertEqual(popped, [1, 2, 3, 4, 5])
        XCTAssertEqual(fx.queue.lastAvailIdx, 0x0002)
        XCTAssertEqual(try fx.queue.pendingCount(), 0)
    }

    func testAvailIndexMayRunAheadByExactlyTheQueueSize() throws {
        let fx = try RingFixture(size: 8)
        fx.makeAvailable([7, 6, 5, 4, 3, 2, 1, 0])
        XCTAssertEqual(try fx.queue.pendingCount(), 8, "a full ring is legal")
        let wrapped = try RingFixture(size: 8, startAvail: 0xfffc)
        wrapped.makeAvailable([0, 1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(try wrapped.queue.pendingCount(), 8)
    }

    func testAvailIndexRunningAheadByMoreThanTheQueueSizeIsFatal() throws {
        let fx = try RingFixture(size: 8)
        fx.driver.forceAvailIndex(9)
        XCTAssertQueueError(.availIndexRunaway(avail: 9, lastSeen: 0), try fx.queue.pendingCount())
        XCTAssertTrue(QueueError.availIndexRunaway(avail: 9, lastSeen: 0).isFatal, "NEEDS_RESET")

        let wrapped = try RingFixture(size: 8, startAvail: 0xfffe)
        wrapped.driver.forceAvailIndex(0x0007)  // 9 ahead across the wrap
        XCTAssertQueueError(.availIndexRunaway(avail: 7, lastSeen: 0xfffe), try wrapped.queue.pendingCount())

        let backwards = try RingFixture(size: 8, startAvail: 100)
        backwards.driver.forceAvailIndex(99)  // the driver took a head back
        XCTAssertQueueError(.availIndexRunaway(avail: 99, lastSeen: 100), try backwards.queue.pendingCount())
    }

    func testHeadIndexOutOfRangeIsFatal() throws {
        let fx = try RingFixture(size: 8)
        fx.makeAvailable([7, 8, 0xffff])
        XCTAssertEqual(try fx.queue.popHead(), 7)
        XCTAssertQueueError(.headOutOfRange(8), try fx.queue.popHead())
        XCTAssertQueueError(.headOutOfRange(0xffff), try fx.queue.popHead())
        XCTAssertTrue(QueueError.headOutOfRange(8).isFatal)
    }

    // MARK: used ring

    func testUsedElementsStayInvisibleUntilPublished() throws {
        let fx = try RingFixture()
        fx.queue.addUsed(head: 3, length: 17)
        XCTAssertEqual(fx.usedElement(slot: 0).id, 3, "element written in place")
        XCTAssertEqual(fx.usedElement(slot: 0).len, 17)
        XCTAssertEqual(fx.queue.nextUsedIdx, 1)
        XCTAssertEqual(fx.queue.publishedUsedIdx, 0)
        XCTAssertEqual(fx.usedIdx, 0, "used.idx not moved by addUsed")
        XCTAssertEqual(fx.driver.collectUsed(), [])

        fx.queue.addUsed(head: 6, length: 0)
        XCTAssertTrue(fx.queue.publishUsed())
        XCTAssertEqual(fx.usedIdx, 2)
        XCTAssertEqual(fx.queue.publishedUsedIdx, 2)
        XCTAssertEqual(fx.driver.collectUsed(), [SimUsed(head: 3, length: 17), SimUsed(head: 6, length: 0)])
        XCTAssertFalse(fx.queue.publishUsed(), "nothing new to publish")
        XCTAssertEqual(fx.usedIdx, 2)
    }

    func testUsedIdIsWrittenAs32BitLittleEndian() throws {
        let fx = try RingFixture()
        // Pre-fill the slot with garbage: the device must overwrite all 4 id bytes.
        fx.usedPtr.storeBytes(of: UInt64.max, toByteOffset: 4, as: UInt64.self)
        fx.queue.addUsed(head: 0x0102, length: 0x0a0b0c0d)
        fx.queue.publishUsed()
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: fx.usedPtr + 4, count: 8)),
                       [0x02, 0x01, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a])
    }

    func testUsedIndexWrapsAt16Bits() throws {
        let fx = try RingFixture(size: 8, usedIdx: 0xfffe)
        XCTAssertEqual(fx.queue.nextUsedIdx, 0xfffe, "continues from the ring's used.idx")
        fx.queue.addUsed(head: 1, length: 10)
        fx.queue.addUsed(head: 2, length: 20)
        fx.queue.addUsed(head: 3, length: 30)
        XCTAssertTrue(fx.queue.publishUsed())
        XCTAssertEqual(fx.usedIdx, 0x0001)
        // Slots 0xfffe & 7 = 6, 7, then 0.
        XCTAssertEqual(fx.usedElement(slot: 6).id, 1)
        XCTAssertEqual(fx.usedElement(slot: 7).id, 2)
        XCTAssertEqual(fx.usedElement(slot: 0).id, 3)
        XCTAssertEqual(fx.usedElement(slot: 0).len, 30)
    }

    func testFullRoundTripThroughTheSimulatedDriver() throws {
        let fx = try RingFixture(size: 8)
        // Three passes over an 8-entry ring: descriptors come back to the driver's free list.
        for round in 0..<3 {
            var heads: [UInt16] = []
            for _ in 0..<4 {
                let b = fx.buffer(64)
                heads.append(try XCTUnwrap(fx.driver.add([SimBuffer(iova: b, length: 32, writable: false),
                                                          SimBuffer(iova: b + 32, length: 32, writable: true)])))
            }
            XCTAssertEqual(try fx.queue.pendingCount(), 4)
            for _ in 0..<4 {
                let h = try fx.queue.popHead()
                let s = try fx.walk(h)
                XCTAssertNil(s.error)
                fx.queue.addUsed(head: h, length: UInt32(s.writableBytes))
            }
            fx.queue.publishUsed()
            XCTAssertEqual(fx.driver.collectUsed(), heads.map { SimUsed(head: $0, length: 32) }, "round \(round)")
            XCTAssertEqual(fx.driver.freeDescriptors, 8)
        }
    }

    // MARK: resume and remap

    func testResumeContinuesFromStartAvailAndTheRingsUsedIndex() throws {
        let fx = try RingFixture(size: 8)
        fx.makeAvailable([4, 5, 6, 7, 0])
        for _ in 0..<3 {
            let h = try fx.queue.popHead()
            fx.queue.addUsed(head: h, length: 1)
        }
        fx.queue.publishUsed()
        // A new device side (daemon restart) resumes from the saved last_avail_idx.
        var resumed = try SplitQueue(addresses: fx.driver.addresses, memory: fx.memory, eventIdx: true,
                                     startAvail: fx.queue.lastAvailIdx)
        XCTAssertEqual(resumed.lastAvailIdx, 3)
        XCTAssertEqual(resumed.nextUsedIdx, 3, "used index taken from the ring")
        XCTAssertEqual(try resumed.pendingCount(), 2)
        XCTAssertEqual(try resumed.popHead(), 7)
        XCTAssertEqual(try resumed.popHead(), 0)
        resumed.addUsed(head: 7, length: 1)
        resumed.publishUsed()
        XCTAssertEqual(fx.usedIdx, 4)
        XCTAssertEqual(fx.usedElement(slot: 3).id, 7, "no used slot overwritten")
        XCTAssertEqual(fx.usedElement(slot: 2).id, 6)
    }

    func testRemapResolvesTheRingsThroughTheNewMapping() throws {
        // Two memories with identical layouts but different avail contents.
        let a = SimulatedGuestMemory(), b = SimulatedGuestMemory()
        let da = SimulatedDriver(memory: a, size: 8), db = SimulatedDriver(memory: b, size: 8)
        XCTAssertEqual(da.addresses, db.addresses)
        da.stage(head: 1); da.publish()
        db.stage(head: 6); db.publish()
        let mem = SwitchableMemory(a)
        var q = try SplitQueue(addresses: da.addresses, memory: mem, eventIdx: true)
        mem.target = b
        XCTAssertEqual(try q.pendingCount(), 1)
        XCTAssertEqual(try q.popHead(), 1, "still the old mapping until remap")
        try q.remap(memory: mem)
        db.stage(head: 3); db.publish()
        XCTAssertEqual(try q.pendingCount(), 1, "avail.idx of the new mapping (2) minus lastAvail (1)")
        XCTAssertEqual(try q.popHead(), 3)
        q.addUsed(head: 3, length: 9)
        q.publishUsed()
        XCTAssertEqual(db.collectUsed(), [SimUsed(head: 3, length: 9)])
        XCTAssertEqual(UInt16(littleEndian: a.pointer(da.addresses.usedRing + 2).load(as: UInt16.self)), 0)
    }

    func testRemapFailsWhenARingIsNoLongerMapped() throws {
        let a = SimulatedGuestMemory()
        let d = SimulatedDriver(memory: a, size: 8)
        let mem = SwitchableMemory(a)
        var q = try SplitQueue(addresses: d.addresses, memory: mem, eventIdx: true)
        mem.target = nil
        XCTAssertQueueError(.ringUnmapped(area: "descriptor", address: d.addresses.descTable),
                            try q.remap(memory: mem))
        mem.target = a
        XCTAssertNoThrow(try q.remap(memory: mem))
    }
}

/// Guest memory whose mapping a test can swap or drop (an IOTLB update).
final class SwitchableMemory: GuestMemory {
    var target: SimulatedGuestMemory?
    init(_ target: SimulatedGuestMemory?) { self.target = target }
    func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan? {
        target?.translate(address, length: length, write: write)
    }
}
