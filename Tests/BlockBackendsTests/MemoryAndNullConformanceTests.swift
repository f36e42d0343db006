import BlockBackends
import TestSupport
import XCTest

/// The memory backend under the backend conformance suite: every scenario.
final class MemoryConformanceTests: XCTestCase {
    func conformance() -> BackendConformance {
        BackendConformance(open: {
            OpenedBackend(try MemoryBackendFactory(capacityBytes: BackendConformance.capacity))
        }, openReadOnly: {
            OpenedBackend(try MemoryBackendFactory(capacityBytes: BackendConformance.capacity, readOnly: true))
        })
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

/// The null backend under the backend conformance suite. It discards data,
/// so the suite runs with `storesData: false`: only completion semantics
/// (tags, results, counts, capacity, one-at-a-time reaping) and range and
/// read-only refusals are checked, never bytes; the two-queue scenario is
/// about data only and is left out.
final class NullConformanceTests: XCTestCase {
    func conformance() -> BackendConformance {
        BackendConformance(storesData: false, open: {
            OpenedBackend(try NullBackendFactory(capacityBytes: BackendConformance.capacity))
        }, openReadOnly: {
            OpenedBackend(try NullBackendFactory(capacityBytes: BackendConformance.capacity, readOnly: true))
        })
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
}
