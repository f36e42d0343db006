import ArgumentParser
import Glibc
import VDUSEDevice

/// `vduse-blk stats NAME`: prints the counters a running device publishes
/// (cache hits per tier, bytes fetched, fetch latency for remote images).
struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Show a running device's backend counters.")

    @Argument(help: "Device name.")
    var name: String

    func validate() throws {
        // The name becomes part of a path: the device-name rule keeps it one plain file name.
        try validateDeviceName(name)
    }

    func run() throws {
        let path = StatsFile.path(for: name)
        guard let f = fopen(path, "r") else {
            printError("no statistics for \(name) (\(path) missing: is the device running with a remote backend?)")
            throw ExitCode.failure
        }
        defer { fclose(f) }
        var st = stat()
        if stat(path, &st) == 0 {
            let age = time(nil) - st.st_mtim.tv_sec
            if age > 5 { print("# last updated \(age) s ago (the daemon may have stopped)") }
        }
        var line: UnsafeMutablePointer<CChar>?
        var cap = 0
        defer { free(line) }
        while getline(&line, &cap, f) > 0, let line { print(String(cString: line), terminator: "") }
    }
}
