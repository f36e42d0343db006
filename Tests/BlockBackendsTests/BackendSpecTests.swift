import BlockBackends
import TestSupport
import XCTest

/// Size strings and backend specs from the command line are hostile input.
final class BackendSpecTests: XCTestCase {
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
        XCTAssertEqual(try BackendSpec.parse("file:/tmp/a.img"), BackendSpec(kind: "file", arguments: "/tmp/a.img"))
        XCTAssertEqual(try BackendSpec.parse("file:rel:colon"), BackendSpec(kind: "file", arguments: "rel:colon"))
        XCTAssertEqual(try FileBackendProvider.path(of: "rel:colon"), "rel:colon")
        for bad in ["", "file", ":x", "file:a\u{0}b"] {
            XCTAssertThrowsError(try BackendSpec.parse(bad), bad) { e in
                XCTAssertFalse("\(e)".isEmpty)
            }
        }
        XCTAssertThrowsError(try FileBackendProvider.path(of: ""))
    }

    /// The catalog opens a spec through the provider of its kind and names
    /// the known kinds when there is none.
    func testCatalogDispatchesByKind() throws {
        let dir = try TempDir()
        let catalog = BackendCatalog([FileBackendProvider()])
        let factory = try catalog.open("file:" + dir.file("a.img"), options: BackendOpenOptions(size: 1 << 20, engine: .sync))
        XCTAssertEqual(factory.geometry.capacityBytes, 1 << 20)
        XCTAssertNil(factory.statistics())
        XCTAssertEqual(factory.notes, [])
        for bad in ["nfs:/x", "FILE:/x", "file:", "zstd:/x.zst"] {
            XCTAssertThrowsError(try catalog.open(bad, options: BackendOpenOptions(engine: .sync)), bad) { e in
                XCTAssertEqual((e as? BackendError)?.kind, .invalidSpec, "\(e)")
            }
        }
        XCTAssertThrowsError(try catalog.open("nfs:/x", options: BackendOpenOptions())) { e in
            XCTAssertTrue("\(e)".contains("known: file"), "\(e)")
        }
    }
}
