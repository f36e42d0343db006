import VirtioCore
import VirtioDriverSim
import XCTest

/// Notification suppression on a split virtqueue, both directions:
/// used buffer notifications (interrupts; used_event or avail.flags
/// NO_INTERRUPT) and available buffer notifications (kicks; avail_event or
/// used.flags NO_NOTIFY), including the 16-bit wrap of vring_need_event.
final class NotificationTests: XCTestCase {
    // MARK: vring_need_event

    func testNeedsEventFiresExactlyWhenEventLiesInTheNewWindow() {
        // Meaning of vring_need_event: notify iff index `event` was filled by
        // this move, i.e. event is in [old, new) modulo 2^16.
        let olds: [UInt16] = [0, 1, 100, 0x7fff, 0x8000, 0xfff0, 0xfffe, 0xffff]
        for old in olds {
            for delta: UInt16 in 0...20 {
                let new = old &+ delta
                for offset in -8...28 {
                    let event = old &+ UInt16(truncatingIfNeeded: offset)
                    let expected = (event &- old) < (new &- old)
                    XCTAssertEqual(SplitRingLayout.needsEvent(event: event, new: new, old: old), expected,
                                   "event \(event) new \(new) old \(old)")
                }
            }
        }
    }

    // MARK: used buffer notifications (interrupts)

    func testFirstInterruptDecisionAfterSetupAlwaysFires() throws {
        let fx = try RingFixture(eventIdx: true)
        fx.setUsedEvent(100)
        XCTAssertTrue(fx.publishAndDecide(1), "no earlier decision to compare with: interrupt")
        XCTAssertFalse(fx.publishAndDecide(1), "from then on used_event decides")
    }

    func testEventIdxInterruptsOnlyWhenUsedIdxPassesUsedEvent() throws {
        let fx = try RingFixture(eventIdx: true)
        XCTAssertTrue(fx.publishAndDecide(1))  // used.idx 1
        fx.setUsedEvent(3)  // "interrupt me once entry 3 is used"
        XCTAssertFalse(fx.publishAndDecide(1), "used.idx 2")
        XCTAssertFalse(fx.publishAndDecide(1), "used.idx 3: entry 3 not yet written")
        XCTAssertTrue(fx.publishAndDecide(1), "used.idx 4: entry 3 written")
        XCTAssertFalse(fx.publishAndDecide(1), "used.idx 5: already signalled past used_event")
    }

    func testEventIdxBatchThatJumpsOverUsedEventInterrupts() throws {
        let fx = try RingFixture(eventIdx: true)
        XCTAssertTrue(fx.publishAndDecide(1))  // used.idx 1
        fx.setUsedEvent(2)
        XCTAssertTrue(fx.publishAndDecide(3), "used.idx 1 -> 4 crosses 2 within one batch")
        XCTAssertFalse(fx.publishAndDecide(3), "used.idx 4 -> 7 does not")
    }

    func testEventIdxDecisionAcrossUsedIndexWrap() throws {
        let fx = try RingFixture(eventIdx: true, usedIdx: 0xfffc)
        XCTAssertTrue(fx.publishAndDecide(1))  // used.idx 0xfffd
        fx.setUsedEvent(0xffff)
        XCTAssertFalse(fx.publishAndDecide(1), "used.idx 0xfffe")
        XCTAssertTrue(fx.publishAndDecide(3), "used.idx 0xfffe -> 0x0001 fills 0xffff across the wrap")
        XCTAssertEqual(fx.usedIdx, 0x0001)
        fx.setUsedEvent(0x0002)
        XCTAssertFalse(fx.publishAndDecide(1), "used.idx 0x0002")
        XCTAssertTrue(fx.publishAndDecide(1), "used.idx 0x0003")
        fx.setUsedEvent(0xfff0)  // an event far behind is not "passed" again
        XCTAssertFalse(fx.publishAndDecide(1))
    }

    func testNoInterruptFlagWithoutEventIdx() throws {
        let fx = try RingFixture(eventIdx: false)
        fx.setUsedEvent(100)  // not negotiated: must be ignored
        fx.setAvailFlags(SplitRingLayout.availFlagNoInterrupt)
        XCTAssertFalse(fx.publishAndDecide(1), "NO_INTERRUPT suppresses even the first")
        XCTAssertFalse(fx.publishAndDecide(2))
        fx.setAvailFlags(0)
        XCTAssertTrue(fx.publishAndDecide(1))
        XCTAssertTrue(fx.publishAndDecide(1), "every publish interrupts while the flag is clear")
    }

    func testEventIdxIgnoresTheNoInterruptFlag() throws {
        let fx = try RingFixture(eventIdx: true)
        XCTAssertTrue(fx.publishAndDecide(1))  // used.idx 1
        fx.setAvailFlags(SplitRingLayout.availFlagNoInterrupt)
        fx.setUsedEvent(1)
        XCTAssertTrue(fx.publishAndDecide(1), "used_event decides; avail.flags is ignored under EVENT_IDX")
    }

    // MARK: available buffer notifications (kicks)

    func testEnableNotificationsPublishesAvailEventAndReportsRacingWork() throws {
        let fx = try RingFixture(eventIdx: true)
        func add() throws {
            let b = fx.buffer(16)
            XCTAssertNotNil(fx.driver.add([SimBuffer(iova: b, length: 16, writable: true)]))
        }
        for _ in 0..<3 { try add() }
        XCTAssertTrue(try fx.queue.enableNotifications(), "work arrived before re-arming: look again")
        XCTAssertEqual(fx.availEvent, 0)
        for _ in 0..<3 { _ = try fx.queue.popHead() }
        XCTAssertFalse(try fx.queue.enableNotifications())
        XCTAssertEqual(fx.availEvent, 3, "kick me when avail entry 3 is made available")

        try add()
        XCTAssertTrue(fx.driver.kick(), "avail.idx 3 -> 4 passes avail_event 3")
        try add()
        XCTAssertFalse(fx.driver.kick(), "device has not re-armed: kick suppressed")
        for _ in 0..<2 { _ = try fx.queue.popHead() }
        XCTAssertFalse(try fx.queue.enableNotifications())
        XCTAssertEqual(fx.availEvent, 5)
        try add()
        XCTAssertTrue(fx.driver.kick())
    }

    func testAvailEventFollowsLastAvailAcrossWrap() throws {
        let fx = try RingFixture(eventIdx: true, startAvail: 0xffff)
        XCTAssertFalse(try fx.queue.enableNotifications())
        XCTAssertEqual(fx.availEvent, 0xffff)
        fx.makeAvailable([2, 3])
        XCTAssertEqual(try fx.queue.popHead(), 2)
        XCTAssertEqual(try fx.queue.popHead(), 3)
        XCTAssertFalse(try fx.queue.enableNotifications())
        XCTAssertEqual(fx.availEvent, 0x0001)
    }

    func testNoNotifyFlagWithoutEventIdx() throws {
        let fx = try RingFixture(eventIdx: false)
        fx.queue.disableNotifications()
        XCTAssertEqual(fx.usedFlags, SplitRingLayout.usedFlagNoNotify)
        let b = fx.buffer(16)
        fx.driver.add([SimBuffer(iova: b, length: 16, writable: true)])
        XCTAssertFalse(fx.driver.kick(), "device is polling")
        XCTAssertTrue(try fx.queue.enableNotifications(), "the chain added meanwhile is reported")
        XCTAssertEqual(fx.usedFlags, 0)
        XCTAssertEqual(fx.availEvent, 0, "avail_event untouched without EVENT_IDX")
        fx.driver.add([SimBuffer(iova: b, length: 16, writable: true)])
        XCTAssertTrue(fx.driver.kick())
    }

    func testUsedFlagsStayZeroUnderEventIdx() throws {
        let fx = try RingFixture(eventIdx: true)
        XCTAssertFalse(try fx.queue.enableNotifications())
        fx.queue.disableNotifications()
        XCTAssertEqual(fx.usedFlags, 0, "EVENT_IDX suppresses kicks through avail_event, not NO_NOTIFY")
        XCTAssertEqual(fx.availEvent, 0)
    }

    func testEnableNotificationsReportsAvailRunaway() throws {
        let fx = try RingFixture(size: 8, eventIdx: true)
        fx.driver.forceAvailIndex(9)
        XCTAssertQueueError(.availIndexRunaway(avail: 9, lastSeen: 0), try fx.queue.enableNotifications())
    }
}
