import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// The shared, lock-protected state of one `FaultProxy`, referenced by its accept and
/// connection threads (never the façade itself, so dropping the proxy runs its deinit).
///
/// Owns the fault plan, the counters, the set of open socket descriptors (so `stop()` can
/// `shutdown()` them and wake every blocked thread) and the count of live threads (so
/// `stop()` can wait for them). Every field is guarded by `condition`.
final class FaultProxyCore: @unchecked Sendable {
    struct Counters: Sendable {
        var requests = 0
        var faultsInjected = 0
        var bytesForwarded = 0
        var connectionsAccepted = 0
    }

    let upstreamHost: String
    let upstreamPort: Int

    private let condition = NSCondition()
    private var stopping = false
    private var plan: (fault: FaultProxy.Fault, remaining: Int) = (.pass, 0)
    private var counters = Counters()
    private var openDescriptors = Set<Int32>()
    private var liveThreads = 0

    init(upstreamHost: String, upstreamPort: Int) {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    // MARK: Fault plan and counters

    func inject(_ fault: FaultProxy.Fault, count: Int) {
        locked { plan = (fault, max(0, count)) }
    }

    /// Counts one request and takes the fault it gets (consuming one use of the plan).
    func takeFault() -> FaultProxy.Fault {
        locked {
            counters.requests += 1
            guard plan.remaining > 0 else { return .pass }
            if plan.remaining != Int.max { plan.remaining -= 1 }
            if plan.fault != .pass { counters.faultsInjected += 1 }
            return plan.fault
        }
    }

    func countConnection() { locked { counters.connectionsAccepted += 1 } }
    func countForwarded(_ bytes: Int) { locked { counters.bytesForwarded += bytes } }
    var snapshot: Counters { locked { counters } }
    var isStopping: Bool { locked { stopping } }

    // MARK: Descriptors

    /// Tracks `fd` for shutdown on stop; false (and nothing tracked) if already stopping,
    /// in which case the caller closes it.
    func register(_ fd: Int32) -> Bool {
        locked {
            guard !stopping else { return false }
            openDescriptors.insert(fd)
            return true
        }
    }

    /// Stops tracking `fd` and closes it (under the lock, so `stop()` never shuts down a
    /// reused descriptor number).
    func close(_ fd: Int32) {
        locked {
            openDescriptors.remove(fd)
            _ = Glibc.close(fd)
        }
    }

    /// Sleeps up to `seconds`; returns false early if the proxy is stopping.
    func sleep(_ seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        return locked {
            while !stopping {
                if !condition.wait(until: deadline) { return !stopping }
            }
            return false
        }
    }

    // MARK: Threads

    /// Runs `body` on a new thread counted until it returns.
    func spawn(name: String, _ body: @escaping @Sendable () -> Void) {
        locked { liveThreads += 1 }
        let thread = Thread { [self] in
            body()
            locked {
                liveThreads -= 1
                condition.broadcast()
            }
        }
        thread.name = name
        thread.start()
    }

    /// Shuts down every tracked socket, wakes sleepers and waits (up to `timeout`) for all
    /// threads to finish. Idempotent.
    func stop(timeout: Double = 5) {
        let deadline = Date().addingTimeInterval(timeout)
        locked {
            stopping = true
            for fd in openDescriptors { shutdown(fd, Int32(SHUT_RDWR)) }
            condition.broadcast()
            while liveThreads > 0 {
                if !condition.wait(until: deadline) { break }
            }
        }
    }
}
