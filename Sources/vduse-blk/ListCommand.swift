import ArgumentParser
import VDUSEDevice

/// `vduse-blk list`: the VDUSE devices that exist and how they are bound.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List VDUSE devices.")

    func run() throws {
        for name in VDUSEControl.listDevices() {
            var line = name
            if let driver = VdpaTool.driver(name: name) {
                line += "\tbound:\(driver)"
                if let disk = VdpaTool.blockDevice(name: name) { line += "\t/dev/\(disk)" }
            } else if VdpaTool.isBound(name: name) {
                line += "\tbound:none"
            } else {
                line += "\tunbound"
            }
            print(line)
        }
    }
}
