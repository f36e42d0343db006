import ArgumentParser
import BlockEngine

/// `vduse-blk set NAME --limit-...`: changes a running device's QoS limits
/// through its daemon's control socket; they apply at once to every queue.
/// Limits not named keep their value.
struct SetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Change a running device's QoS limits.")

    @Argument(help: "Device name.")
    var name: String

    @OptionGroup(title: "QoS limits")
    var qos: QoSOptions

    @Flag(help: "Print the daemon's reply as one JSON object.")
    var json = false

    func validate() throws {
        try validateDeviceName(name)
        guard !qos.given.isEmpty else {
            throw ValidationError("name at least one limit to change, e.g. --limit-iops 500 or --limit-bps none")
        }
    }

    func run() throws {
        var limits: [String: Any] = [:]
        for (name, value) in try qos.changes() {
            if let key = QoSWire.keys.first(where: { $0.name == name })?.json { limits[key] = value }
        }
        let reply: [String: Any]
        reply = try ControlClient.commandRequest(name: name, ["cmd": "set", "limits": limits])
        if json {
            print(ControlClient.jsonLine(reply))
            return
        }
        let now = reply["limits"] as? [String: Any] ?? [:]
        let text = QoSWire.keys.map { key -> String in
            let v = now[key.json] as? UInt64 ?? 0
            return "\(key.name)=\(v == 0 ? "none" : "\(v)")"
        }
        print("\(name): limits \(text.joined(separator: " "))")
    }
}
