import Glibc

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
