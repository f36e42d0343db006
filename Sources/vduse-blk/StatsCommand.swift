import ArgumentParser
import Glibc
import VDUSEDevice

/// `vduse-blk stats NAME`: a running device's counters, asked over its
/// control socket (cache hits per tier, bytes fetched, fetch latency for
/// remote images); the stats file the daemon rewrites every second when no
/// daemon answers there.
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show a running device's counters.")

    @Argument(help: "Device name.")
    var name: String

    @Flag(help: "Print the daemon's reply as one JSON object (for scripts).")
    var json = false

    func validate() throws {
        // The name becomes part of a path: the device-name rule keeps it one plain file name.
        try validateDeviceName(name)
    }

    func run() throws {
        do {
            let reply = try ControlClient.request(name: name, ["cmd": "stats"])
            if let message = ControlClient.errorMessage(reply) { fail(message) }
            if json {
                print(ControlClient.jsonLine(reply))
                return
            }
            print("capacity_bytes \(reply["capacity_bytes"] as? UInt64 ?? 0)")
            // QoS limits (0: unlimited), as `limit_iops 500`.
            for key in QoSWire.keys { print("limit_\(key.json) \((reply["limits"] as? [String: Any])?[key.json] as? UInt64 ?? 0)") }
            for case let row as [Any] in reply["backend"] as? [Any] ?? [] where row.count == 2 {
                print("\(row[0]) \(row[1])")
            }
            for case let q as [String: Any] in reply["queues"] as? [Any] ?? [] {
                let i = q["queue"] as? UInt64 ?? 0
                let total = (q["requests"] as? [String: Any] ?? [:]).values.reduce(0) { $0 + ($1 as? UInt64 ?? 0) }
                let failed = (q["failures"] as? [String: Any] ?? [:]).values.reduce(0) { $0 + ($1 as? UInt64 ?? 0) }
                print("queue\(i)_requests \(total)")
                print("queue\(i)_failed \(failed)")
                for key in ["read_bytes", "written_bytes", "in_flight", "service_time_avg_us"] {
                    print("queue\(i)_\(key) \(q[key] as? UInt64 ?? 0)")
                }
            }
            return
        } catch .noDaemon {
            // No daemon answers: fall back to the last published stats file.
        } catch {
            if case .broken(let why) = error { fail("\(name): control socket: \(why)") }
        }
        try printStatsFile()
    }

    private func fail(_ message: String) -> Never {
        printError(message)
        Self.exit(withError: ExitCode.failure)
    }

    private func printStatsFile() throws {
        let path = StatsFile.path(for: name)
        guard let f = fopen(path, "r") else {
            printError("no statistics for \(name): no daemon answers on \(ControlSocketPath.path(for: name)) and \(path) is missing")
            throw ExitCode.failure
        }
        defer { fclose(f) }
        var rows: [(String, UInt64)] = []
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        defer { free(line) }
        var text: [String] = []
        while getline(&line, &cap, f) > 0, let line {
            let s = String(cString: line)
            text.append(s)
            let parts = s.split(separator: " ")
            if parts.count == 2, let v = UInt64(parts[1].filter { $0 != "\n" }) { rows.append((String(parts[0]), v)) }
        }
        var age = 0
        var st = stat()
        if stat(path, &st) == 0 { age = time(nil) - st.st_mtim.tv_sec }
        if json {
            print(ControlClient.jsonLine(["ok": true, "name": name, "source": "stats-file", "age_s": age,
                                          "backend": rows.map { [$0.0, $0.1] as [Any] }] as [String: Any]))
            return
        }
        if age > 5 { print("# last updated \(age) s ago (the daemon may have stopped)") }
        for s in text { print(s, terminator: "") }
    }
}
