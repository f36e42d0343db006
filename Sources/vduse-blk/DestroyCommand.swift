import ArgumentParser
import Glibc
import VDUSEDevice

/// `vduse-blk destroy NAME`: unbinds the device if bound and destroys it.
struct DestroyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "destroy", abstract: "Unbind and destroy a device.")

    @Argument(help: "Device name.")
    var name: String

    func validate() throws {
        try validateDeviceName(name)
    }

    func run() throws {
        do {
            let control = try VDUSEControl()
            if try DeadDeviceDestroyer.destroy(name: name, control: control) { return }
            if VdpaTool.isBound(name: name) { try VdpaTool.delete(name: name) }
            try control.destroyDevice(name: name)
        } catch {
            printError(error.description)
            throw ExitCode.failure
        }
    }
}
