import Glibc
import SystemSupport

/// SIGINT, SIGTERM and SIGUSR2 (hand-over) for the daemon, taken by one thread with `sigwait` from
/// the first instruction of `create` on (they are blocked in every thread).
/// During start-up (a slow or stuck image open, a remote probe waiting on a
/// server) a signal ends the process at once, exit status 128 + signal: nothing
/// exists yet that needs undoing. Once `arm()` is called (just before the
/// VDUSE device is created) a signal is held for `wait()`, so the device is
/// always torn down by the normal path. Owns the signal thread and the
/// monitor guarding the signal received.
final class ShutdownSignals: @unchecked Sendable {
    private let monitor = Monitor()
    private var armed = false
    private var received: Int32 = 0

    /// Blocks SIGINT, SIGTERM and SIGUSR2 in this thread (and so in every thread it
    /// starts later) and starts the thread that takes them.
    init() {
        var set = Self.signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let thread = try? NamedThread(name: "signals") { [self] in run() }
        if thread == nil { printError("cannot start the signal thread: SIGINT/SIGTERM stay blocked") }
    }

    private static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGUSR2)
        return set
    }

    private func run() {
        var set = Self.signalSet()
        while true {
            var signal: Int32 = 0
            guard sigwait(&set, &signal) == 0 else { continue }
            monitor.withLock {
                if !armed {
                    printError("interrupted during start-up (signal \(signal)); nothing was created")
                    _exit(128 + signal)
                }
                if received == 0 { received = signal }
                monitor.broadcast()
            }
        }
    }

    /// From now on a signal is kept for `wait()` instead of ending the process.
    func arm() { monitor.withLock { armed = true } }

    /// Waits for SIGINT, SIGTERM or SIGUSR2 (returns at once if one came since `arm()`).
    func wait() -> Int32 {
        monitor.lock()
        defer { monitor.unlock() }
        while received == 0 { monitor.wait() }
        return received
    }
}
