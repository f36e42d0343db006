import SystemSupport

/// Runs the iproute2 `vdpa` tool to bind and unbind devices, and reads the
/// vdpa bus in sysfs. Owns nothing; every call is one process.
public enum VdpaTool {
    /// Runs `vdpa ARGS`; returns stderr+stdout on failure.
    @discardableResult
    public static func run(_ args: [String]) throws(VDUSEError) -> String {
        let candidates = ["/usr/sbin/vdpa", "/sbin/vdpa", "/usr/bin/vdpa", "/bin/vdpa"]
        guard let tool = candidates.first(where: PathQuery.isExecutable) else {
            throw .attach("the `vdpa` tool was not found: install iproute2")
        }
        let result: Subprocess.Result
        do { result = try Subprocess.run(tool, args) } catch { throw .attach("cannot run vdpa: \(error.message)") }
        let text = String(result.output.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        guard result.status == 0 else {
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
        PathQuery.exists("/sys/bus/vdpa/devices/\(name)")
    }

    /// The bus driver the vdpa device is bound to (virtio_vdpa, vhost_vdpa), if any.
    public static func driver(name: String) -> String? {
        PathQuery.linkTargetName("/sys/bus/vdpa/devices/\(name)/driver")
    }

    /// The block device (vdX) virtio-vdpa created for this vdpa device, if any.
    public static func blockDevice(name: String) -> String? {
        let base = "/sys/bus/vdpa/devices/\(name)"
        guard let entries = PathQuery.entries(base) else { return nil }
        for e in entries where e.hasPrefix("virtio") {
            if let first = PathQuery.entries("\(base)/\(e)/block")?.first { return first }
        }
        return nil
    }
}
