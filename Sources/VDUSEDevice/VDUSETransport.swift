import CVDUSE
import Glibc
import SystemSupport
import VirtioCore

/// `DeviceTransport` over a real `/dev/vduse/NAME` fd. Owns that fd.
public final class VDUSETransport: DeviceTransport {
    public let fd: Int32
    public let name: String
    public let interruptSink: any InterruptSink
    /// Daemon bounce pages once registered (set on the control thread while
    /// every worker is paused; released after the fd is closed).
    nonisolated(unsafe) var userBounce: UserBounceBuffer?

    /// Opens `/dev/vduse/NAME` (one opener at a time).
    public init(name: String) throws(VDUSEError) {
        let fd = open("/dev/vduse/\(name)", O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT { throw .noSuchDevice(name) }
            if e == EBUSY { throw .busy(name) }
            if e == EACCES || e == EPERM { throw .notRoot }
            throw .ioctl(what: "open /dev/vduse/\(name)", errno: e)
        }
        self.fd = fd
        self.name = name
        interruptSink = VDUSEInterruptSink(deviceFD: fd)
    }

    // The bounce pages (a stored property) are released after this body:
    // only once the kernel has unpinned them and stopped using them.
    deinit { close(fd) }

    public func setupQueue(_ index: Int, maxSize: UInt16) throws(VDUSEError) {
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_vq_setup(fd, UInt32(index), maxSize) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_SETUP \(index)", errno: -rc) }
    }

    public func negotiatedFeatures() throws(VDUSEError) -> UInt64 {
        var f: UInt64 = 0
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_dev_get_features(fd, &f) }
        if rc < 0 { throw .ioctl(what: "VDUSE_DEV_GET_FEATURES", errno: -rc) }
        return f
    }

    public func queueInfo(_ index: Int) throws(VDUSEError) -> QueueInfo {
        var info = vb_vduse_vq_info()
        info.index = UInt32(index)
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_vq_get_info(fd, &info) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_GET_INFO \(index)", errno: -rc) }
        return QueueInfo(addresses: QueueAddresses(size: UInt16(truncatingIfNeeded: info.num),
                                                   descTable: info.desc_addr, availRing: info.driver_addr,
                                                   usedRing: info.device_addr),
                         availIndex: info.split.avail_index, ready: info.ready != 0)
    }

    public func attachKickFD(queue: Int, fd kick: Int32) throws(VDUSEError) {
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_vq_setup_kickfd(fd, UInt32(queue), kick) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_SETUP_KICKFD \(queue)", errno: -rc) }
    }

    public func detachKickFD(queue: Int) {
        _ = sysCallResult(returnsNegatedErrno: true) { vb_vduse_vq_setup_kickfd(fd, UInt32(queue), VB_VDUSE_EVENTFD_DEASSIGN) }
    }

    public func makeMemory(queue: Int) -> IOTLBMemory {
        let m = IOTLBMemory(deviceFD: fd)
        m.userBounce = userBounce
        return m
    }

    /// Drops the view's mappings overlapping [start, last] and points it at
    /// the daemon bounce pages if they were registered since.
    public func invalidate(_ memory: IOTLBMemory, start: UInt64, last: UInt64) {
        memory.invalidate(start: start, last: last)
        memory.userBounce = userBounce
    }

    public func userBounceState() -> UserBounceState {
        if userBounce != nil { return .registered }
        var info = vb_vduse_iova_info()
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_iotlb_get_info(fd, &info) }
        if rc == -ENOTTY { return .unsupported("the kernel has no VDUSE_IOTLB_GET_INFO (needs 6.0 or later)") }
        // EINVAL: nothing mapped at IOVA 0 yet (the bounce region appears with the first DMA mapping).
        guard rc == 0 else { return .notYet }
        guard info.capability & VB_VDUSE_IOVA_CAP_UMEM != 0, info.start == 0 else {
            return .unsupported("IOVA 0 is not a bounce region (bound to vhost-vdpa?)")
        }
        return .ready(bytes: info.last &+ 1)
    }

    public func registerUserBounce(bytes: UInt64) throws(VDUSEError) {
        let buffer = try UserBounceBuffer(size: bytes)
        try buffer.raiseMemlockLimit()
        let rc = sysCallResult(returnsNegatedErrno: true) { vb_vduse_iotlb_reg_umem(fd, UInt64(UInt(bitPattern: buffer.base)), 0, bytes) }
        if rc < 0 { throw .ioctl(what: "VDUSE_IOTLB_REG_UMEM (\(bytes >> 20) MiB)", errno: -rc) }
        userBounce = buffer
    }
}
