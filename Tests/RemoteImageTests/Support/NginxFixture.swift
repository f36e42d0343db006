import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// A private nginx (Debian nginx-light) serving one directory over HTTP/1.1 on 127.0.0.1.
///
/// Owns the nginx process (run in the foreground, single process) and a temp prefix directory
/// holding the generated config, pid file, logs and temp paths; `stop()` (or deinit) terminates
/// the process and removes the directory. Static file serving gives `Accept-Ranges: bytes`,
/// single-range `206` replies with `Content-Range`, ETags, keep-alive and sendfile.
final class NginxFixture {
    static let binary = "/usr/sbin/nginx"

    struct StartError: Error, CustomStringConvertible {
        let description: String
    }

    let port: Int
    /// The temp prefix directory (config, logs, pid file); removed on stop.
    let prefix: String
    private let process: Process
    private var stopped = false

    /// Starts nginx serving `root`; returns once the port accepts connections.
    /// Throws if nginx is not installed, does not start, or is not accepting within 10 s.
    init(root: String, binary: String = NginxFixture.binary) throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw StartError(description: "\(binary) not found: the remote-image tests need a real nginx; "
                + "install it with `apt-get install nginx-light`")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw StartError(description: "nginx root \(root) is not a directory")
        }
        var template = Array((NSTemporaryDirectory() + "/vb-nginx-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw StartError(description: "mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        prefix = String(cString: made)

        var lastFailure = ""
        for _ in 0..<8 {
            let candidate: Int
            do { candidate = try LoopbackSocket.freePort() } catch {
                try? FileManager.default.removeItem(atPath: prefix)
                throw error
            }
            switch Self.launch(binary: binary, prefix: prefix, root: root, port: candidate) {
            case .running(let proc):
                process = proc
                port = candidate
                return
            case .portTaken(let log):
                lastFailure = log
                continue
            case .failed(let message):
                try? FileManager.default.removeItem(atPath: prefix)
                throw StartError(description: message)
            }
        }
        try? FileManager.default.removeItem(atPath: prefix)
        throw StartError(description: "nginx could not bind a free port after 8 tries; last log:\n\(lastFailure)")
    }

    deinit { stop() }

    func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }

    /// The error log so far (for test failure messages).
    var errorLog: String { Self.readLogs(prefix) }

    /// Terminates nginx (SIGTERM, then SIGKILL after 5 s), waits for it, removes the prefix dir.
    func stop() {
        guard !stopped else { return }
        stopped = true
        Self.terminate(process)
        try? FileManager.default.removeItem(atPath: prefix)
    }

    // MARK: - Launch

    private enum Launch {
        case running(Process)
        case portTaken(String)
        case failed(String)
    }

    private static func launch(binary: String, prefix: String, root: String, port: Int) -> Launch {
        let confPath = prefix + "/nginx.conf"
        let stderrPath = prefix + "/stderr.log"
        do {
            try config(prefix: prefix, root: root, port: port).write(toFile: confPath, atomically: true, encoding: .utf8)
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            try? FileManager.default.removeItem(atPath: prefix + "/error.log")
            try? FileManager.default.removeItem(atPath: prefix + "/nginx.pid")
        } catch {
            return .failed("cannot write nginx config in \(prefix): \(error)")
        }
        let proc = Process()
        proc.executableURL = URL(fileURLWithPath: binary)
        proc.arguments = ["-p", prefix + "/", "-c", confPath, "-e", prefix + "/error.log"]
        proc.standardInput = FileHandle.nullDevice
        let sink = FileHandle(forWritingAtPath: stderrPath)
        proc.standardOutput = sink
        proc.standardError = sink
        do { try proc.run() } catch {
            return .failed("cannot run \(binary): \(error)")
        }
        try? sink?.close()

        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !proc.isRunning {
                let log = readLogs(prefix)
                if log.contains("Address already in use") { return .portTaken(log) }
                return .failed("nginx exited with status \(proc.terminationStatus) before accepting on port \(port); "
                    + "log:\n\(log)")
            }
            // nginx writes its pid file only after binding its listener, so a pid file naming
            // our child proves the port is nginx's and not someone else's that also accepts.
            if pidFile(prefix) == proc.processIdentifier && LoopbackSocket.isAccepting(port: port) {
                return .running(proc)
            }
            usleep(20_000)
        }
        terminate(proc)
        return .failed("nginx did not accept connections on 127.0.0.1:\(port) within 10 s; log:\n\(readLogs(prefix))")
    }

    private static func pidFile(_ prefix: String) -> Int32? {
        (try? String(contentsOfFile: prefix + "/nginx.pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    private static func terminate(_ proc: Process) {
        guard proc.isRunning else { return }
        kill(proc.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while proc.isRunning && Date() < deadline { usleep(10_000) }
        if proc.isRunning { kill(proc.processIdentifier, SIGKILL) }
        proc.waitUntilExit()
    }

    private static func readLogs(_ prefix: String) -> String {
        ["error.log", "stderr.log"].compactMap { name in
            (try? String(contentsOfFile: prefix + "/" + name, encoding: .utf8)).map { "[\(name)]\n\($0)" }
        }.joined(separator: "\n")
    }

    /// The generated nginx.conf: foreground single process, everything under `prefix`.
    static func config(prefix: String, root: String, port: Int) -> String {
        func quoted(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let p = prefix + "/"
        return """
        daemon off;
        master_process off;
        worker_processes 1;
        pid \(quoted(p + "nginx.pid"));
        error_log \(quoted(p + "error.log")) info;
        events { worker_connections 256; }
        http {
            access_log \(quoted(p + "access.log"));
            client_body_temp_path \(quoted(p + "client_body"));
            proxy_temp_path \(quoted(p + "proxy"));
            fastcgi_temp_path \(quoted(p + "fastcgi"));
            uwsgi_temp_path \(quoted(p + "uwsgi"));
            scgi_temp_path \(quoted(p + "scgi"));
            default_type application/octet-stream;
            sendfile on;
            tcp_nopush on;
            tcp_nodelay on;
            keepalive_timeout 75s;
            keepalive_requests 100000;
            etag on;
            server {
                listen 127.0.0.1:\(port);
                server_name localhost;
                root \(quoted(root));
                location / { }
            }
        }

        """
    }
}
