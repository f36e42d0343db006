import BlockBackends
import Glibc

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

/// A thread publishing a backend's statistics every second until stopped.
final class StatsPublisher: @unchecked Sendable {
    private let source: any BackendStatistics
    private let name: String
    private var stopping = false
    private var lock = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var thread: pthread_t?

    init(source: any BackendStatistics, name: String) {
        self.source = source
        self.name = name
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&cond, nil)
    }

    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        if pthread_create(&t, nil, { arg in
            let p = Unmanaged<StatsPublisher>.fromOpaque(arg!).takeRetainedValue()
            p.run()
            return nil
        }, box) == 0 { thread = t }
    }

    func stop() {
        pthread_mutex_lock(&lock)
        stopping = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&lock)
        if let t = thread { pthread_join(t, nil) }
        thread = nil
        StatsFile.write(source.statistics(), name: name)
    }

    private func run() {
        pthread_mutex_lock(&lock)
        while !stopping {
            pthread_mutex_unlock(&lock)
            StatsFile.write(source.statistics(), name: name)
            pthread_mutex_lock(&lock)
            var deadline = timespec()
            clock_gettime(CLOCK_REALTIME, &deadline)
            deadline.tv_sec += 1
            if !stopping { pthread_cond_timedwait(&cond, &lock, &deadline) }
        }
        pthread_mutex_unlock(&lock)
    }
}
