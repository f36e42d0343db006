import ArgumentParser
import Glibc
import VDUSEDevice

/// `vduse-blk destroy NAME`: stops a running daemon over its control socket
/// (the path SIGTERM takes: unbind, stop, destroy) and waits for it; without
/// a daemon, unbinds the device if bound and destroys it. Refuses before
/// touching anything while the disk is in use (mounted, held, opened
/// exclusively): unbinding would pull it from under its users.
struct DestroyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "destroy", abstract: "Stop a device's daemon, or unbind and destroy a device without one.")

    @Argument(help: "Device name.")
    var name: String

    @Option(help: "Seconds to wait for a running daemon to stop (1-600).")
    var timeout: Int = 30

    func validate() throws {
        try validateDeviceName(name)
        guard (1...600).contains(timeout) else { throw ValidationError("--timeout must be 1-600") }
    }

    func run() throws {
        // Only a live daemon's disk may be opened to probe for exclusive users:
        // an open of a disk whose daemon died can block in the kernel for good.
        let live = (try? ControlClient.request(name: name, ["cmd": "info"])) != nil
        if let disk = VdpaTool.blockDevice(name: name), let why = DiskUsage().reason(disk: disk, probeExclusive: live) {
            fail("\(name) not destroyed: \(why); stop its users (umount) first")
        }
        let reply: [String: Any]
        do {
            reply = try ControlClient.request(name: name, ["cmd": "stop"])
        } catch {
            switch error {
            case .noDaemon: return try destroyWithoutDaemon()
            case .broken(let why): fail("\(name): control socket: \(why)")
            }
        }
        if let message = ControlClient.errorMessage(reply) { fail("\(name): the daemon refused to stop: \(message)") }
        // A pid that is not a whole number in pid_t range waits for the device node alone.
        let pid = (reply["pid"] as? UInt64).flatMap { Int32(exactly: $0) } ?? 0
        let deadline = time(nil) + timeout
        while Self.alive(pid) || access("/dev/vduse/\(name)", F_OK) == 0 {
            if time(nil) >= deadline {
                fail("\(name): the daemon (pid \(pid)) has not stopped after \(timeout) s; it is still shutting down")
            }
            usleep(50_000)
        }
    }

    private func destroyWithoutDaemon() throws {
        do {
            let control = try VDUSEControl()
            if try DeadDeviceDestroyer.destroy(name: name, control: control) { return }
            if VdpaTool.isBound(name: name) { try VdpaTool.delete(name: name) }
            try control.destroyDevice(name: name)
        } catch {
            fail(error.description)
        }
    }

    /// True while `pid` runs (a zombie counts as gone).
    static func alive(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = DiskUsage.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].dropFirst().first
        return state != "Z" && state != "X"
    }

    private func fail(_ message: String) -> Never {
        printError(message)
        Self.exit(withError: ExitCode.failure)
    }
}
