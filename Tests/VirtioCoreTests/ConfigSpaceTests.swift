import VirtioBlk
import VirtioCore
import XCTest

/// The virtio-blk config space bytes and the offered feature set.
final class ConfigSpaceTests: XCTestCase {
    func le<T: FixedWidthInteger>(_ b: [UInt8], _ off: Int, _: T.Type) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(b[off + i]) << (8 * i) }
        return v
    }

    func testLayoutMatchesVirtioBlkConfig() {
        let p = BlkDeviceParameters(capacityBytes: 256 << 20, blockSize: 4096, serial: "abc", numQueues: 4,
                                    queueSize: 128)
        let b = p.configSpace()
        XCTAssertEqual(b.count, 60)
        XCTAssertEqual(le(b, 0, UInt64.self), (256 << 20) / 512)
        XCTAssertEqual(le(b, 8, UInt32.self), 1 << 20)
        XCTAssertEqual(le(b, 12, UInt32.self), 126)
        XCTAssertEqual(le(b, 20, UInt32.self), 4096)
        XCTAssertEqual(le(b, 34, UInt16.self), 4)
        XCTAssertEqual(le(b, 40, UInt32.self), 1)
        XCTAssertEqual(le(b, 44, UInt32.self), 8)
        XCTAssertEqual(le(b, 52, UInt32.self), 1)
        XCTAssertEqual(b[56], 1)
    }

    func testOfferedFeatures() {
        let rw = BlkDeviceParameters(capacityBytes: 1 << 20)
        let names = Set(VirtioFeature.names(rw.offeredFeatures))
        XCTAssertEqual(names, ["VERSION_1", "ACCESS_PLATFORM", "INDIRECT_DESC", "EVENT_IDX", "SIZE_MAX", "SEG_MAX",
                               "BLK_SIZE", "TOPOLOGY", "FLUSH", "MQ", "DISCARD", "WRITE_ZEROES"])
        let ro = BlkDeviceParameters(capacityBytes: 1 << 20, readOnly: true)
        XCTAssertTrue(VirtioFeature.names(ro.offeredFeatures).contains("RO"))
        XCTAssertFalse(VirtioFeature.names(ro.offeredFeatures).contains("DISCARD"))
        XCTAssertEqual(ro.offeredFeatures & VirtioFeature.blkConfigWCE, 0, "VDUSE rejects CONFIG_WCE")
    }

    func testNeedsEventMatchesTheSpecFormula() {
        XCTAssertTrue(SplitRingLayout.needsEvent(event: 0, new: 1, old: 0))
        XCTAssertFalse(SplitRingLayout.needsEvent(event: 1, new: 1, old: 0))
        XCTAssertTrue(SplitRingLayout.needsEvent(event: 4, new: 6, old: 2))
        XCTAssertFalse(SplitRingLayout.needsEvent(event: 6, new: 6, old: 2))
        XCTAssertTrue(SplitRingLayout.needsEvent(event: 0xffff, new: 1, old: 0xfffe), "wraps")
    }
}
