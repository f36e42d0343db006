import CRemote
import Glibc
import Synchronization

/// Wakes one queue thread when a chunk it waits for has arrived (or failed):
/// owns an eventfd (the queue backend's `completionFD`) and a flag the queue
/// backend checks in `reap`, since the queue thread drains the eventfd itself.
final class QueueWaker: Sendable {
    let fd: Int32
    private let fired = Atomic<Bool>(false)

    init() throws(RemoteError) {
        let made = vb_wake_eventfd()
        guard made >= 0 else { throw .system(what: "eventfd", errno: -made) }
        fd = made
    }

    deinit { close(fd) }

    func wake() {
        fired.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
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
