import CSys
import Glibc

/// An eventfd (close-on-exec): a counter one thread signals and another
/// waits on with poll, io_uring or the kernel (kick and interrupt fds). Owns
/// the descriptor until `close()`; the value itself is a plain fd number, so
/// copies share one descriptor and exactly one owner closes it.
public struct EventFD: Sendable, Equatable {
    /// The descriptor.
    public let fd: Int32

    /// A new eventfd starting at `initialValue`; `nonBlocking` reads return
    /// at once when the counter is zero.
    public init(initialValue: UInt32 = 0, nonBlocking: Bool = true) throws(SyscallError) {
        fd = try sysCall("eventfd", returnsNegatedErrno: true) { vb_eventfd(initialValue, nonBlocking ? 1 : 0) }
    }

    /// Wraps a descriptor made elsewhere (e.g. by a test's fake).
    public init(adopting fd: Int32) { self.fd = fd }

    /// Adds one to the counter (a saturated counter is readable anyway).
    @inlinable @inline(__always)
    public func signal() { _ = vb_eventfd_signal(fd) }

    /// Consumes the counter without blocking: true if it was non-zero
    /// (the descriptor must be non-blocking).
    @inlinable @inline(__always)
    @discardableResult
    public func drain() -> Bool { vb_eventfd_drain(fd) > 0 }

    /// Closes the descriptor.
    public func close() { _ = Glibc.close(fd) }
}
