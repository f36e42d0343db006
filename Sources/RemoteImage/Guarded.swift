import ZstdImage

/// A value behind a pthread mutex (the project's `Monitor`). Used instead of
/// `Synchronization.Mutex` because ThreadSanitizer understands pthread
/// locking, so the CI's TSan run sees these critical sections. Owns the lock
/// and the value; the value is only reachable inside `withLock`.
final class Guarded<Value>: @unchecked Sendable {
    private let monitor = Monitor()
    private var value: Value

    init(_ value: Value) { self.value = value }

    @inline(__always)
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        monitor.lock()
        defer { monitor.unlock() }
        return try body(&value)
    }
}
