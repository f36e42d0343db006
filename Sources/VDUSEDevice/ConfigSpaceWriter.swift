import SystemSupport
import CVDUSE

/// Changes a live device's config space and tells the driver (online
/// resize): `VDUSE_DEV_SET_CONFIG` + `VDUSE_DEV_INJECT_CONFIG_IRQ`, behind a
/// seam so the resize logic runs against a fake in tests. Control path only.
public protocol ConfigSpaceWriter: AnyObject {
    /// Overwrites `bytes.count` bytes of the config space at `offset`.
    func writeConfig(offset: UInt32, bytes: [UInt8]) throws(VDUSEError)
    /// Raises a config-change interrupt. The kernel refuses it (EINVAL)
    /// before the driver set DRIVER_OK; the new config is kept regardless.
    func injectConfigInterrupt() throws(VDUSEError)
}

extension VDUSETransport: ConfigSpaceWriter {
    public func writeConfig(offset: UInt32, bytes: [UInt8]) throws(VDUSEError) {
        let rc = bytes.withUnsafeBufferPointer { b in
            sysCallResult(returnsNegatedErrno: true) { vb_vduse_dev_set_config(fd, offset, b.baseAddress, UInt32(b.count)) }
        }
        if rc < 0 { throw .ioctl(what: "VDUSE_DEV_SET_CONFIG", errno: -rc) }
    }

    public func injectConfigInterrupt() throws(VDUSEError) {
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_dev_inject_config_irq(fd) }
        if rc < 0 { throw .ioctl(what: "VDUSE_DEV_INJECT_CONFIG_IRQ", errno: -rc) }
    }
}

extension ServedVDUSEDevice {
    /// The running device's config-space writer; nil before `create` or after `shutdown`.
    public var configWriter: (any ConfigSpaceWriter)? { transport }
}
