import Glibc
import Synchronization

/// Wakes one queue thread when work it waits for has finished elsewhere (a
/// remote chunk arrived or failed, a chunk was decompressed by the pool):
/// owns an eventfd (the queue backend's `completionFD`) and a flag the queue
/// backend checks in `reap`, since the queue thread drains the eventfd itself.
public final class QueueWaker: Sendable {
    public let fd: Int32
    private let fired = Atomic<Bool>(false)

    public init() throws(SyscallError) {
        fd = try EventFD().fd
    }

    deinit { close(fd) }

    public func wake() {
        fired.store(true, ordering: .releasing)
        EventFD(adopting: fd).signal()
    }

    /// True once per burst of wakes.
    @inline(__always)
    public func take() -> Bool {
        guard fired.load(ordering: .relaxed) else { return false }
        return fired.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// Sleeps until woken or `milliseconds` pass (blocking readers at open time).
    public func wait(milliseconds: Int32) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, milliseconds) > 0 {
            var value: UInt64 = 0
            _ = read(fd, &value, 8)
        }
    }
}
