import BlockBackends
import Logging
import RemoteImage
import TestSupport
import XCTest

/// The remote backend under the backend conformance suite: a raw object of
/// `BackendConformance.capacity` random bytes served by a private nginx
/// (256 KiB chunks, a fresh disk cache per backend) with a writable overlay;
/// without the overlay for the read-only scenario. Every scenario runs. The
/// overlay tracks whole sectors, so misaligned writes, discards and
/// write-zeroes are refused (-EINVAL); misaligned reads are served.
final class RemoteConformanceTests: XCTestCase {
    var www: TempDir!
    var nginx: NginxFixture!

    override func setUpWithError() throws {
        www = try TempDir(label: "www")
        try writeFile(www.file("disk.img"), randomBytes(Int(BackendConformance.capacity), seed: 41))
        nginx = try NginxFixture(root: www.path)
    }

    override func tearDown() {
        nginx?.stop()
        nginx = nil
        www = nil
    }

    func open(overlay: Bool) throws -> OpenedBackend {
        let dir = try TempDir(label: "remote")
        var options = ["chunk=256K", "cache-dir=\(dir.file("cache"))", "format=raw"]
        if overlay { options.append("overlay=\(dir.file("disk.overlay"))") }
        let factory = try RemoteBackendFactory(options: RemoteOptions.parse(url: nginx.url("disk.img"), options: options),
                                               logger: Logger(label: "test"))
        return OpenedBackend(factory, keepAlive: [dir])
    }

    func conformance() -> BackendConformance {
        BackendConformance(misaligned: .writesRefused, open: { try self.open(overlay: true) },
                           openReadOnly: { try self.open(overlay: false) })
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
