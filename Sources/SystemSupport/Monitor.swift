import Glibc

/// A pthread mutex with one condition variable, heap-allocated so its address
/// never moves. Owns both; the data it guards is documented where it is used.
public final class Monitor: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    @inlinable @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inlinable @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }

    @inlinable @inline(__always)
    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for `broadcast` (the mutex must be held).
    public func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits at most `nanoseconds` (the mutex must be held).
    public func wait(nanoseconds: Int) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var total = now.tv_nsec + nanoseconds
        var deadline = now
        deadline.tv_sec += total / 1_000_000_000
        total %= 1_000_000_000
        deadline.tv_nsec = total
        pthread_cond_timedwait(condition, mutex, &deadline)
    }

    public func broadcast() { pthread_cond_broadcast(condition) }

    /// Wakes one waiter (the mutex should be held).
    public func signal() { pthread_cond_signal(condition) }
}
