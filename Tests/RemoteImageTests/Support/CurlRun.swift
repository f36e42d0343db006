import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// What one curl invocation produced: exit status, body (stdout), response headers of every
/// transfer (`-D`), stderr (the `-v` trace when asked for) and the wall time.
struct CurlResult {
    let exitCode: Int32
    let body: Data
    let headers: String
    let stderr: String
    let elapsed: Double

    /// Status codes of all responses, in order.
    var statusCodes: [Int] {
        headers.components(separatedBy: "\r\n").compactMap { line in
            guard line.hasPrefix("HTTP/") else { return nil }
            let parts = line.split(separator: " ")
            return parts.count >= 2 ? Int(parts[1]) : nil
        }
    }

    /// The first value of header `name` (case-insensitive) over all responses.
    func header(_ name: String) -> String? {
        let prefix = name.lowercased() + ":"
        for line in headers.components(separatedBy: "\r\n") where line.lowercased().hasPrefix(prefix) {
            return line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }
}

/// One running `/usr/bin/curl` process. Owns the process and a temp directory with its
/// stdout, stderr and header files; `wait()` collects them and removes the directory.
final class CurlRun {
    static let binary = "/usr/bin/curl"

    struct Missing: Error, CustomStringConvertible {
        var description: String { "\(CurlRun.binary) not found: install it with `apt-get install curl`" }
    }

    private let process = Process()
    private let dir: String
    private let started = Date()

    /// Starts `curl -sS -D <headers> <arguments>` with stdout captured as the body.
    init(_ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { throw Missing() }
        var template = Array((NSTemporaryDirectory() + "/vb-curl-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        dir = String(cString: made)
        for name in ["out", "err", "hdr"] { _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: nil) }
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["-sS", "-D", dir + "/hdr"] + arguments
        process.standardInput = FileHandle.nullDevice
        let out = FileHandle(forWritingAtPath: dir + "/out")
        let err = FileHandle(forWritingAtPath: dir + "/err")
        process.standardOutput = out
        process.standardError = err
        defer {
            try? out?.close()
            try? err?.close()
        }
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    var isRunning: Bool { process.isRunning }

    /// Waits for curl to exit (killing it after `timeout` seconds) and collects its output.
    func wait(timeout: Double = 30) -> CurlResult {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let elapsed = Date().timeIntervalSince(started)
        let read = { (name: String) in FileManager.default.contents(atPath: self.dir + "/" + name) ?? Data() }
        return CurlResult(exitCode: process.terminationStatus, body: read("out"),
                          headers: String(decoding: read("hdr"), as: UTF8.self),
                          stderr: String(decoding: read("err"), as: UTF8.self), elapsed: elapsed)
    }

    /// Runs curl to completion.
    static func run(_ arguments: [String], timeout: Double = 30) throws -> CurlResult {
        try CurlRun(arguments).wait(timeout: timeout)
    }
}
