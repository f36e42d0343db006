import CVDUSE
import Glibc
import VirtioCore

/// Counts the interrupts a device sends, per queue, and signals an eventfd
/// per queue so a test can sleep until one arrives. Owns the eventfds and the
/// counts, which a pthread mutex guards (not `Synchronization.Mutex`: the
/// prebuilt Synchronization module is not instrumented, so ThreadSanitizer
/// reports its critical sections as races).
public final class CountingInterruptSink: InterruptSink, @unchecked Sendable {
    private var counts: [Int]
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    public let eventFDs: [Int32]

    public init(queues: Int) {
        counts = [Int](repeating: 0, count: queues)
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_mutex_t())
        pthread_mutex_init(lock, nil)
        eventFDs = (0..<queues).map { _ in vb_eventfd(0, 1) }
    }

    deinit {
        for fd in eventFDs { close(fd) }
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func withLock<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    public func interrupt(queue: Int) -> Bool {
        guard queue < eventFDs.count else { return false }
        withLock { counts[queue] += 1 }
        var one: UInt64 = 1
        _ = write(eventFDs[queue], &one, 8)
        return true
    }

    public func count(queue: Int) -> Int { withLock { counts[queue] } }

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
