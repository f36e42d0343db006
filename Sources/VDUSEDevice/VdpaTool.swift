import Foundation

/// Runs the iproute2 `vdpa` tool to bind and unbind devices, and reads the
/// vdpa bus in sysfs. Owns nothing; every call is one process.
public enum VdpaTool {
    /// Runs `vdpa ARGS`; returns stderr+stdout on failure.
    @discardableResult
    public static func run(_ args: [String]) throws(VDUSEError) -> String {
        let p = Process()
        let candidates = ["/usr/sbin/vdpa", "/sbin/vdpa", "/usr/bin/vdpa", "/bin/vdpa"]
        guard let tool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw .attach("the `vdpa` tool was not found: install iproute2")
        }
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { throw .attach("cannot run vdpa: \(error)") }
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0 else {
            throw .attach("vdpa \(args.joined(separator: " ")) failed: \(text)")
        }
        return text
    }

    public static func add(name: String) throws(VDUSEError) {
        try run(["dev", "add", "name", name, "mgmtdev", "vduse"])
    }

    public static func delete(name: String) throws(VDUSEError) {
        try run(["dev", "del", name])
    }

    /// Whether a vdpa device of this name exists on the bus.
    public static func isBound(name: String) -> Bool {
        FileManager.default.fileExists(atPath: "/sys/bus/vdpa/devices/\(name)")
    }

    /// The bus driver the vdpa device is bound to (virtio_vdpa, vhost_vdpa), if any.
    public static func driver(name: String) -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(
            atPath: "/sys/bus/vdpa/devices/\(name)/driver") else { return nil }
        return (target as NSString).lastPathComponent
    }

    /// The block device (vdX) virtio-vdpa created for this vdpa device, if any.
    public static func blockDevice(name: String) -> String? {
        let base = "/sys/bus/vdpa/devices/\(name)"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: base) else { return nil }
        for e in entries where e.hasPrefix("virtio") {
            if let blocks = try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(e)/block"),
               let first = blocks.first { return first }
        }
        return nil
    }
}
