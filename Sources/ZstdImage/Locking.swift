import Glibc

/// A pthread mutex with one condition variable, heap-allocated so its address
/// never moves. Owns both; the data it guards is documented where it is used.
public final class Monitor: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

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

    @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
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
}

/// A started pthread running a closure; `join` waits for it.
public struct SpawnedThread: @unchecked Sendable {
    private let thread: pthread_t

    /// Starts `body` on a new thread, named `name` (at most 15 bytes, as
    /// `top -H` shows it) when one is given.
    public init(name: String? = nil, _ body: @escaping @Sendable () -> Void) throws(ZstdImageError) {
        final class Box: @unchecked Sendable {
            let name: String?
            let body: @Sendable () -> Void
            init(_ name: String?, _ body: @escaping @Sendable () -> Void) {
                self.name = name
                self.body = body
            }
        }
        let box = Unmanaged.passRetained(Box(name, body))
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            if let name = box.name { _ = name.withCString { pthread_setname_np(pthread_self(), $0) } }
            box.body()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw .io(what: "pthread_create", errno: rc)
        }
        thread = tid
    }

    public func join() { pthread_join(thread, nil) }
}
