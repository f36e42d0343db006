import CSys
import Glibc
import SystemSupport
import VirtioCore

/// Counts the interrupts a device sends, per queue, and signals an eventfd
/// per queue so a test can sleep until one arrives. Owns the eventfds and the
/// counts.
public final class CountingInterruptSink: InterruptSink {
    let counts: Guarded<[Int]>
    public let eventFDs: [Int32]

    public init(queues: Int) {
        counts = Guarded([Int](repeating: 0, count: queues))
        eventFDs = (0..<queues).map { _ in (try? EventFD().fd) ?? -1 }
    }

    deinit { for fd in eventFDs { close(fd) } }

    public func interrupt(queue: Int) -> Bool {
        guard queue < eventFDs.count else { return false }
        counts.withLock { $0[queue] += 1 }
        var one: UInt64 = 1
        _ = write(eventFDs[queue], &one, 8)
        return true
    }

    public func count(queue: Int) -> Int { counts.withLock { $0[queue] } }

    /// Waits up to `timeoutMs` for an interrupt on `queue`; true if one came.
    public func wait(queue: Int, timeoutMs: Int32) -> Bool {
        var fd = eventFDs[queue]
        var rev: Int16 = 0
        guard vb_poll_in(&fd, &rev, 1, timeoutMs) > 0 else { return false }
        var v: UInt64 = 0
        _ = read(fd, &v, 8)
        return true
    }
}
