import ArgumentParser
import BlockBackends
import Glibc

/// `vduse-blk resize NAME SIZE [--shrink]`: online resize of a running
/// device through its daemon's control socket (backend, then config space
/// and a config-change interrupt).
struct ResizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize", abstract: "Grow (or with --shrink, shrink) a running device.")

    @Argument(help: "Device name.")
    var name: String

    @Argument(help: "New size (e.g. 20G, 512M, or bytes); a multiple of the block size.")
    var size: String

    @Flag(help: "Allow a smaller size: data past the new end is lost.")
    var shrink = false

    @Flag(help: "Print the daemon's reply as one JSON object.")
    var json = false

    func validate() throws {
        try validateDeviceName(name)
        let bytes: UInt64
        do throws(BackendError) { bytes = try ByteSize.parse(size) } catch {
            throw ValidationError("SIZE: \(error.description)")
        }
        guard bytes > 0, bytes % 512 == 0 else { throw ValidationError("SIZE must be a positive multiple of 512") }
    }

    func run() throws {
        let bytes = (try? ByteSize.parse(size)) ?? 0
        let reply: [String: Any]
        reply = try ControlClient.commandRequest(name: name, ["cmd": "resize", "size": bytes, "shrink": shrink],
                                              timeoutMillis: 60_000)
        if json {
            print(ControlClient.jsonLine(reply))
            return
        }
        let old = reply["old_bytes"] as? UInt64 ?? 0
        let new = reply["new_bytes"] as? UInt64 ?? bytes
        print("\(name): \(old) -> \(new) bytes")
        if let note = reply["note"] as? String { print("note: \(note)") }
    }
}
