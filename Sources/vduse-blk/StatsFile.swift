import BlockBackends
import BlockEngine
import Glibc
import SystemSupport

/// Where a running device's counters are published: `$VDUSE_BLK_RUN_DIR`
/// (default /run/vduse-blk)/NAME.stats, rewritten atomically every second by
/// the daemon and read by `vduse-blk stats NAME`.
enum StatsFile {
    static var directory: String {
        if let d = getenv("VDUSE_BLK_RUN_DIR") { return String(cString: d) }
        return "/run/vduse-blk"
    }

    static func path(for name: String) -> String { "\(directory)/\(name).stats" }

    /// Writes `rows` as `name value` lines (via a temporary file and rename).
    static func write(_ rows: [(String, UInt64)], name: String) {
        _ = mkdir(directory, 0o755)
        let path = path(for: name)
        let tmp = path + ".tmp"
        var text = ""
        for (k, v) in rows { text += "\(k) \(v)\n" }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let ok = text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
        close(fd)
        if ok { rename(tmp, path) } else { unlink(tmp) }
    }

    static func remove(name: String) { unlink(path(for: name)) }
}

/// A thread that, every second until stopped, publishes a backend's
/// statistics (when it keeps any) and logs the queues' new backing-store
/// failures (at most one line per queue per second, `QueueFailureReporter`).
/// Owns the thread, the reporter and the monitor guarding `stopping`.
final class StatsPublisher: @unchecked Sendable {
    private let source: any BlockBackendFactory
    private let name: String
    private let failures: QueueFailureReporter?
    private var stopping = false
    private let monitor = Monitor()
    private var thread: NamedThread?

    init(source: any BlockBackendFactory, name: String, failures: QueueFailureReporter? = nil) {
        self.source = source
        self.name = name
        self.failures = failures
    }

    func start() {
        thread = try? NamedThread { [self] in run() }
    }

    func stop() {
        monitor.withLock {
            stopping = true
            monitor.broadcast()
        }
        thread?.join()
        thread = nil
        tick()
    }

    private func tick() {
        if let rows = source.statistics() { StatsFile.write(rows, name: name) }
        failures?.report()
    }

    private func run() {
        monitor.lock()
        while !stopping {
            monitor.unlock()
            tick()
            monitor.lock()
            if !stopping { monitor.wait(nanoseconds: 1_000_000_000) }
        }
        monitor.unlock()
    }
}
