import BlockBackends
import XCTest

/// Size strings and backend specs from the command line are hostile input.
final class CLIParsingTests: XCTestCase {
    func testSizes() throws {
        XCTAssertEqual(try ByteSize.parse("512"), 512)
        XCTAssertEqual(try ByteSize.parse("64K"), 64 << 10)
        XCTAssertEqual(try ByteSize.parse("256M"), 256 << 20)
        XCTAssertEqual(try ByteSize.parse("2GiB"), 2 << 30)
        XCTAssertEqual(try ByteSize.parse("3T"), 3 << 40)
        for bad in ["", "M", "-1", "1.5G", "12Q", "0x10", "99999999999999999999", "9999999999T", " 1 0 "] {
            XCTAssertThrowsError(try ByteSize.parse(bad), bad)
        }
    }

    func testBackendSpecs() throws {
        XCTAssertEqual(try BackendSpec.parse("file:/tmp/a.img"), .file(path: "/tmp/a.img"))
        XCTAssertEqual(try BackendSpec.parse("file:rel:colon"), .file(path: "rel:colon"))
        for bad in ["", "file", "file:", "nfs:/x", ":x", "FILE:/x"] {
            XCTAssertThrowsError(try BackendSpec.parse(bad), bad) { e in
                XCTAssertFalse("\(e)".isEmpty)
            }
        }
    }
}
