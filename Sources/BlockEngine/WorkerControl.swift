import CSys
import Dispatch
import Glibc
import Synchronization
import SystemSupport

/// The control side's handle on one queue thread: asks it to pause (quiesce
/// in-flight I/O and park, e.g. while IOTLB mappings change), resume or stop,
/// and reads back its final avail index. The only state shared with the
/// queue thread; touched on control paths, never per request.
public final class WorkerControl: Sendable {
    public enum Request: Int { case run = 0, pause = 1, stop = 2 }

    let requested = Atomic<Int>(Request.run.rawValue)
    /// eventfd that wakes the queue thread when `requested` changes.
    public let wakeFD: Int32
    let parked = DispatchSemaphore(value: 0)
    let resumed = DispatchSemaphore(value: 0)
    let exited = DispatchSemaphore(value: 0)
    let availIndex = Atomic<UInt32>(0)
    let broken = Atomic<Bool>(false)
    /// How many times the queue thread went to sleep in poll() (written by
    /// the queue thread only; for tests and diagnostics).
    public let sleeps = Atomic<Int>(0)
    /// The queue thread (a `pthread_t`; 0 before it started or once joined).
    let thread = Atomic<UInt>(0)

    public init() throws(EngineError) {
        do { wakeFD = try EventFD().fd } catch { throw .system(error) }
    }

    deinit { close(wakeFD) }

    var current: Request { Request(rawValue: requested.load(ordering: .acquiring)) ?? .run }

    func wake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(wakeFD, $0.baseAddress, 8) }
    }

    /// Quiesces the worker: returns once it has no I/O in flight and is parked.
    public func pause() {
        requestPause()
        waitParked()
    }

    /// First half of `pause()`, so several workers can quiesce in parallel.
    public func requestPause() {
        requested.store(Request.pause.rawValue, ordering: .releasing)
        wake()
    }

    public func waitParked() { parked.wait() }

    /// The next avail index the worker will consume (updated once per batch).
    public var currentAvailIndex: UInt16 { UInt16(truncatingIfNeeded: availIndex.load(ordering: .acquiring)) }

    /// Lets a paused worker continue (it re-resolves its rings first).
    public func resume() {
        requested.store(Request.run.rawValue, ordering: .releasing)
        resumed.signal()
    }

    /// Drains in-flight I/O and ends the worker thread; returns the next avail
    /// index it would have consumed (for GET_VQ_STATE). The thread is joined:
    /// when this returns it has ended and dropped its hold on the worker, so
    /// nothing of the queue (its slots, its backend handle) is released later
    /// on a thread nobody waits for.
    @discardableResult
    public func stop() -> UInt16 {
        let wasPaused = current == .pause
        requested.store(Request.stop.rawValue, ordering: .releasing)
        wake()
        if wasPaused { resumed.signal() }
        exited.wait()
        let t = thread.exchange(0, ordering: .acquiringAndReleasing)
        if t != 0 { pthread_join(pthread_t(t), nil) }
        return UInt16(truncatingIfNeeded: availIndex.load(ordering: .acquiring))
    }

    /// True once the worker met a fatal ring error (the device needs a reset).
    public var needsReset: Bool { broken.load(ordering: .acquiring) }
}

/// Errors from setting up the engine (never raised per request).
public enum EngineError: Error, Equatable, CustomStringConvertible {
    /// A system call failed.
    case system(SyscallError)
    case queue(String)

    /// A failed system call named `what`, by its errno.
    public static func system(what: String, errno: Int32) -> EngineError { .system(SyscallError(call: what, errno: errno)) }

    public var description: String {
        switch self {
        case .system(let s): return s.message
        case .queue(let s): return s
        }
    }
}
