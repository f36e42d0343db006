import ArgumentParser
import Glibc

/// The `vduse-blk` command: create, list, resize, limit (set) and destroy VDUSE
/// virtio-blk devices; make and check zstd images.
@main
struct VduseBlk: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vduse-blk",
        abstract: "A userspace virtio-blk device served through VDUSE.",
        subcommands: [CreateCommand.self, ListCommand.self, DestroyCommand.self, StatsCommand.self, ResizeCommand.self, SetCommand.self,
                      ImageCommand.self])

    /// The error contract (README, "Errors"): every failure is one line on
    /// stderr, `vduse-blk: MESSAGE`; exit status 64 for a usage error (bad
    /// option or value), 1 for everything else. Help and version still print
    /// in full.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            if let line = errorLine(for: error, arguments: arguments) {
                printError(line.message)
                Glibc.exit(line.status)
            }
            exit(withError: error)
        }
    }

    /// The one line and exit status for `error`; nil for what ArgumentParser
    /// prints itself (help, version, a bare ExitCode after its own message).
    static func errorLine(for error: Error, arguments: [String]) -> (message: String, status: Int32)? {
        let code = exitCode(for: error)
        if error is ExitCode || code == .success { return nil }
        var text = message(for: error).split(separator: "\n").first.map(String.init) ?? "failed"
        if text.hasPrefix("Error: ") { text.removeFirst(7) }
        if code == .validationFailure {
            let sub = configuration.subcommands.first { $0.configuration.commandName == arguments.first }
            let help = sub.map { "vduse-blk \($0.configuration.commandName ?? "") --help" } ?? "vduse-blk --help"
            text += " (see '\(help)')"
        }
        return (text, code.rawValue)
    }
}
