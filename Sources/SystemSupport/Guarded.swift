/// A value behind a pthread mutex (a `Monitor`). Used instead of
/// `Synchronization.Mutex` because ThreadSanitizer understands pthread
/// locking, so the CI's TSan run sees these critical sections (the prebuilt
/// Synchronization module is not instrumented). Owns the lock and the value;
/// the value is only reachable inside `withLock`.
public final class Guarded<Value>: @unchecked Sendable {
    @usableFromInline let monitor = Monitor()
    @usableFromInline var value: Value

    public init(_ value: Value) { self.value = value }

    @inlinable @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        monitor.lock()
        defer { monitor.unlock() }
        return try body(&value)
    }
}
