import BlockBackends
import BlockEngine
import Glibc
import Synchronization
import TestSupport
import XCTest

/// How often a queue thread sleeps per request (issue 16: a QD1 request must
/// not cost the queue thread an extra wake-up).
final class WakeupTests: XCTestCase {
    /// io_uring reads of a page-cached file complete inline, inside submit,
    /// and are reaped in the same pass; the ring still signals its completion
    /// eventfd. Watching that eventfd while nothing is in flight made every
    /// request wake the thread twice (the kick, then the stale completion).
    func testAnInlineCompletionDoesNotWakeTheQueueThreadAgain() throws {
        let dir = try TempDir()
        let backend = try FileBackendFactory(path: dir.path + "/img", size: 1 << 20, engine: .uring)
        let h = try EngineHarness(backend: backend, queueSize: 16)
        defer { h.stop() }
        // Warm the page cache so the reads complete inline.
        for i in 0..<8 { XCTAssertEqual(h.run { $0.read(sector: UInt64(i * 8), length: 4096) }.status, 0) }
        let requests = 40
        let before = h.workers[0].control.sleeps.load(ordering: .relaxed)
        for i in 0..<requests {
            // One request at a time (QD1): each waits for the previous completion.
            XCTAssertEqual(h.run { $0.read(sector: UInt64((i % 8) * 8), length: 4096) }.status, 0)
        }
        usleep(20_000)
        let sleeps = h.workers[0].control.sleeps.load(ordering: .relaxed) - before
        // One sleep per request (waiting for its kick); a few spare for
        // spurious wake-ups. Before the fix: about two per request.
        XCTAssertLessThanOrEqual(sleeps, requests + requests / 4, "queue thread slept \(sleeps) times for \(requests) requests")
    }
}
