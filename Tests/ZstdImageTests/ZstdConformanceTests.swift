import BlockBackends
import TestSupport
import XCTest
@testable import ZstdImage

/// The zstd backend under the backend conformance suite: a packed image of
/// `BackendConformance.capacity` bytes (4 KiB chunks, a small cache) with a
/// writable overlay; without the overlay for the read-only scenario. Every
/// scenario runs. The overlay tracks whole sectors, so misaligned writes,
/// discards and write-zeroes are refused (-EINVAL); misaligned reads are served.
final class ZstdConformanceTests: XCTestCase {
    static func open(overlay: Bool) throws -> OpenedBackend {
        let dir = try TempDir(label: "zstd")
        let raw = makeRawImage(size: Int(BackendConformance.capacity), seed: 31)
        let image = try packImage(raw, in: dir)
        let factory = try ZstdBackendFactory(options: ZstdBackendOptions(
            imagePath: image, overlayPath: overlay ? dir.file("disk.overlay") : nil, cacheBytes: 256 << 10))
        return OpenedBackend(factory, keepAlive: [dir])
    }

    func conformance() -> BackendConformance {
        BackendConformance(misaligned: .writesRefused, open: { try Self.open(overlay: true) },
                           openReadOnly: { try Self.open(overlay: false) })
    }

    func testWriteThenReadBack() throws { try conformance().writeThenReadBack() }
    func testFlush() throws { try conformance().flushSucceeds() }
    func testDiscardReadsZeroes() throws { try conformance().discardReadsZeroes() }
    func testWriteZeroesReadZeroes() throws { try conformance().writeZeroesReadZeroes() }
    func testManyInFlight() throws { try conformance().manyInFlight() }
    func testReapOneAtATime() throws { try conformance().reapOneAtATime() }
    func testOutOfRangeReads() throws { try conformance().outOfRangeReadsFail() }
    func testOutOfRangeWrites() throws { try conformance().outOfRangeWritesFail() }
    func testMisalignedRequests() throws { try conformance().misalignedRequests() }
    func testReadOnlyRefusesWrites() throws { try conformance().readOnlyRefusesWrites() }
    func testQueuesAreIndependent() throws { try conformance().queuesSeeEachOthersWrites() }
}
