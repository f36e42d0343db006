import Glibc
@testable import VDUSEDevice
import VirtioCore
import XCTest

/// A queue's view of the IOVA space with daemon bounce pages: addresses the
/// driver writes are bounded by the bounce region; the rest still goes to
/// the kernel (here: a closed fd, so nothing is mapped).
final class IOTLBMemoryTests: XCTestCase {
    func testUserBounceTranslationStaysInsideTheRegion() throws {
        let size: UInt64 = 4 << 20
        let bounce = try UserBounceBuffer(size: size)
        XCTAssertEqual(UInt(bitPattern: bounce.base) % (2 << 20), 0, "2 MiB aligned for huge pages")
        let memory = IOTLBMemory(deviceFD: -1)
        XCTAssertNil(memory.translate(0x1000, length: 512, write: false), "nothing mapped before the pages exist")
        memory.userBounce = bounce

        let s = try XCTUnwrap(memory.translate(0x1000, length: 8192, write: true))
        XCTAssertEqual(s.pointer, bounce.base + 0x1000)
        XCTAssertEqual(s.length, 8192)
        s.pointer.storeBytes(of: 0xA5, as: UInt8.self)
        XCTAssertEqual(bounce.base.load(fromByteOffset: 0x1000, as: UInt8.self), 0xA5)
        // A span running past the end is cut at the end; past the end is not ours.
        XCTAssertEqual(memory.translate(size - 10, length: 100, write: false)?.length, 10)
        XCTAssertNil(memory.translate(size, length: 1, write: false))
        XCTAssertNil(memory.translate(.max, length: 1, write: false))
        memory.userBounce = nil
        XCTAssertNil(memory.translate(0x1000, length: 512, write: false))
    }

    func testUserBounceSizesAreChecked() {
        XCTAssertThrowsError(try UserBounceBuffer(size: 0))
        XCTAssertThrowsError(try UserBounceBuffer(size: 4097))
        XCTAssertThrowsError(try UserBounceBuffer(size: UserBounceBuffer.maximumSize + 4096))
    }
}
