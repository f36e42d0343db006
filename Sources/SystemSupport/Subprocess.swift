import CSys
import Glibc

/// Runs a helper program (the iproute2 `vdpa` tool) to completion and
/// collects what it printed. Owns nothing past one call: a pipe, a
/// posix_spawn'd child with default signal handling and an empty signal
/// mask (the daemon blocks the signals it takes through signalfd), and no
/// file descriptors besides stdin and the pipe.
public enum Subprocess {
    /// What a finished child left: its exit status (128 + signal when a
    /// signal ended it) and its stdout and stderr together.
    public struct Result: Sendable {
        public var status: Int32
        public var output: String
    }

    /// Runs `path` with `arguments` (argv[0] is `path`), waits for it and
    /// returns its status and output (at most `outputLimit` bytes kept).
    public static func run(_ path: String, _ arguments: [String], outputLimit: Int = 1 << 20) throws(SyscallError) -> Result {
        var fds: [Int32] = [-1, -1]
        _ = try sysCall("pipe2", returnsNegatedErrno: true) { vb_pipe_cloexec(&fds) }
        defer { if fds[0] >= 0 { close(fds[0]) } }
        let pid: pid_t
        do {
            defer { close(fds[1]) }
            pid = try spawn(path, arguments, outputFD: fds[1])
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = sysCallResult { buffer.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) } }
            if n <= 0 { break }
            if output.count < outputLimit { output.append(contentsOf: buffer[0..<min(n, outputLimit - output.count)]) }
        }
        var raw: Int32 = 0
        _ = try sysCall("waitpid") { waitpid(pid, &raw, 0) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, spelled out (macros in C).
        let status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return Result(status: status, output: String(decoding: output, as: UTF8.self))
    }

    private static func spawn(_ path: String, _ arguments: [String], outputFD: Int32) throws(SyscallError) -> pid_t {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: Int32 = 0
        _ = try sysCall("posix_spawn \(path)", returnsNegatedErrno: true) {
            vb_spawn_with_output(&pid, path, argv, outputFD)
        }
        return pid
    }
}
