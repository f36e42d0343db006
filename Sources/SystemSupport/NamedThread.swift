import CSys
import Glibc
import SystemPackage

/// A started pthread running a closure, named for `top -H` and debuggers;
/// `join` waits for it. The one place threads are made (queue workers,
/// fetchers, prefetchers, cache writers).
public struct NamedThread: @unchecked Sendable {
    private let thread: pthread_t

    /// Starts `body` on a new thread, named `name` (at most 15 bytes, as
    /// `top -H` shows it) when one is given.
    public init(name: String? = nil, _ body: @escaping @Sendable () -> Void) throws(SyscallError) {
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
            if let name = box.name { name.withCString { vb_set_thread_name($0) } }
            box.body()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw SyscallError(call: "pthread_create", errno: Errno(rawValue: rc))
        }
        thread = tid
    }

    /// Starts `object.run` on a new thread named `name`: for a long-lived
    /// owner that is not `Sendable` (a queue worker, a control loop) and that
    /// hands itself to exactly one thread; `object` stays alive until `run`
    /// returns.
    public init<Object: AnyObject>(name: String, running object: Object, _ run: @escaping (Object) -> Void) throws(SyscallError) {
        let handoff = ThreadHandoff(object, run)
        try self.init(name: name) { handoff.run(handoff.object) }
    }

    /// The pthread, for code that joins by id.
    public var pthread: pthread_t { thread }

    public func join() { pthread_join(thread, nil) }
}

/// An object and what to run on it, handed to exactly one new thread.
private final class ThreadHandoff<Object: AnyObject>: @unchecked Sendable {
    let object: Object
    let run: (Object) -> Void
    init(_ object: Object, _ run: @escaping (Object) -> Void) {
        self.object = object
        self.run = run
    }
}
