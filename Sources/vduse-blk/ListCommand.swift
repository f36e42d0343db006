import ArgumentParser
import VDUSEDevice

/// `vduse-blk list`: the VDUSE devices that exist and how they are bound.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List VDUSE devices.")

    @Flag(help: "One JSON array of devices (name, binding, disk, and what a running daemon reports).")
    var json = false

    func run() throws {
        var rows: [[String: Any]] = []
        for name in VDUSEControl.listDevices() {
            var line = name
            var row: [String: Any] = ["name": name]
            if let driver = VdpaTool.driver(name: name) {
                line += "\tbound:\(driver)"
                row["binding"] = driver
                if let disk = VdpaTool.blockDevice(name: name) {
                    line += "\t/dev/\(disk)"
                    row["disk"] = "/dev/\(disk)"
                }
            } else if VdpaTool.isBound(name: name) {
                line += "\tbound:none"
                row["binding"] = "none"
            } else {
                line += "\tunbound"
                row["binding"] = "unbound"
            }
            if json {
                // What the daemon says about itself, if one answers (briefly: list must not hang).
                if let info = try? ControlClient.request(name: name, ["cmd": "info"], timeoutMillis: 2000),
                   ControlClient.errorMessage(info) == nil {
                    row["daemon"] = true
                    for key in ["pid", "size_bytes", "block_size", "queues", "backend", "read_only"] { row[key] = info[key] }
                } else {
                    row["daemon"] = false
                }
                rows.append(row)
            } else {
                print(line)
            }
        }
        if json { print(ControlClient.jsonLine(rows)) }
    }
}
