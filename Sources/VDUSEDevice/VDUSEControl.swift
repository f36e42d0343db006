import CSys
import CVDUSE
import Glibc
import SystemSupport

/// The `/dev/vduse/control` node: API version negotiation, creating and
/// destroying devices. Owns the control fd.
public final class VDUSEControl {
    public static let controlPath = "/dev/vduse/control"
    public let fd: Int32

    public init() throws(VDUSEError) {
        let fd = open(Self.controlPath, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == ENODEV || e == ENXIO { throw .noControlDevice }
            if e == EACCES || e == EPERM { throw .notRoot }
            throw .ioctl(what: "open \(Self.controlPath)", errno: e)
        }
        self.fd = fd
        var version: UInt64 = 0
        var rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_get_api_version(fd, &version) }
        if rc < 0 { close(fd); throw .ioctl(what: "VDUSE_GET_API_VERSION", errno: -rc) }
        rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_set_api_version(fd, UInt64(VB_VDUSE_API_VERSION)) }
        if rc < 0 { close(fd); throw .ioctl(what: "VDUSE_SET_API_VERSION", errno: -rc) }
    }

    deinit { close(fd) }

    /// Device names the kernel and `vdpa` accept.
    public static func validate(name: String) throws(VDUSEError) {
        let ok = !name.isEmpty && name.utf8.count < 64 && name.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a)
                || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e
        } && name != "control" && name != "." && name != ".."
        if !ok { throw .badName(name) }
    }

    public func createDevice(name: String, deviceID: UInt32, features: UInt64, queues: UInt32,
                             config: [UInt8]) throws(VDUSEError) {
        try Self.validate(name: name)
        if access("/dev/vduse/\(name)", F_OK) == 0 { throw .nameTaken(name) }
        let rc = config.withUnsafeBufferPointer { cfg in
            sysCallResult(returnsNegatedErrno: true) {
                vb_vduse_create_dev(fd, name, 0, deviceID, features, queues, UInt32(getpagesize()),
                                    cfg.baseAddress, UInt32(cfg.count))
            }
        }
        if rc == -EEXIST { throw .nameTaken(name) }
        if rc == -EPERM || rc == -EACCES { throw .notRoot }
        if rc < 0 { throw .ioctl(what: "VDUSE_CREATE_DEV \(name)", errno: -rc) }
    }

    public func destroyDevice(name: String) throws(VDUSEError) {
        try Self.validate(name: name)
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_destroy_dev(fd, name) }
        if rc == -EBUSY { throw .busy(name) }
        if rc == -ENOENT || rc == -EINVAL && access("/dev/vduse/\(name)", F_OK) != 0 { throw .noSuchDevice(name) }
        if rc < 0 { throw .ioctl(what: "VDUSE_DESTROY_DEV \(name)", errno: -rc) }
    }

    /// Names of the VDUSE devices that exist now.
    public static func listDevices() -> [String] {
        guard let dir = opendir("/dev/vduse") else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let n = String(cString: vb_dirent_name(e))
            if n != "." && n != ".." && n != "control" { names.append(n) }
        }
        return names.sorted()
    }
}


