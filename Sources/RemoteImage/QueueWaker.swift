import ImageOverlay
import SystemSupport
import Glibc
import Synchronization

/// Wakes one queue thread when a chunk it waits for has arrived (or failed):
/// owns an eventfd (the queue backend's `completionFD`) and a flag the queue
/// backend checks in `reap`, since the queue thread drains the eventfd itself.
final class QueueWaker: Sendable {
    let fd: Int32
    private let fired = Atomic<Bool>(false)

    init() throws(RemoteError) {
        do { fd = try EventFD().fd } catch { throw .system(what: "eventfd", errno: error.errno.rawValue) }
    }

    deinit { close(fd) }

    func wake() {
        fired.store(true, ordering: .releasing)
        EventFD(adopting: fd).signal()
    }

    /// True once per burst of wakes.
    @inline(__always)
    func take() -> Bool {
        guard fired.load(ordering: .relaxed) else { return false }
        return fired.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// Sleeps until woken or `milliseconds` pass (blocking readers at open time).
    func wait(milliseconds: Int32) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, milliseconds) > 0 {
            var value: UInt64 = 0
            _ = read(fd, &value, 8)
        }
    }
}
