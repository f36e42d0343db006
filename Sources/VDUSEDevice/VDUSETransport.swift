import CVDUSE
import Glibc
import VirtioCore

/// `DeviceTransport` over a real `/dev/vduse/NAME` fd. Owns that fd.
public final class VDUSETransport: DeviceTransport {
    public let fd: Int32
    public let name: String
    public let interruptSink: any InterruptSink

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

    deinit { close(fd) }

    public func setupQueue(_ index: Int, maxSize: UInt16) throws(VDUSEError) {
        let rc = retryEINTR { vb_vduse_vq_setup(fd, UInt32(index), maxSize) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_SETUP \(index)", errno: -rc) }
    }

    public func negotiatedFeatures() throws(VDUSEError) -> UInt64 {
        var f: UInt64 = 0
        let rc = retryEINTR { vb_vduse_dev_get_features(fd, &f) }
        if rc < 0 { throw .ioctl(what: "VDUSE_DEV_GET_FEATURES", errno: -rc) }
        return f
    }

    public func queueInfo(_ index: Int) throws(VDUSEError) -> QueueInfo {
        var info = vb_vduse_vq_info()
        info.index = UInt32(index)
        let rc = retryEINTR { vb_vduse_vq_get_info(fd, &info) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_GET_INFO \(index)", errno: -rc) }
        return QueueInfo(addresses: QueueAddresses(size: UInt16(truncatingIfNeeded: info.num),
                                                   descTable: info.desc_addr, availRing: info.driver_addr,
                                                   usedRing: info.device_addr),
                         availIndex: info.split.avail_index, ready: info.ready != 0)
    }

    public func attachKickFD(queue: Int, fd kick: Int32) throws(VDUSEError) {
        let rc = retryEINTR { vb_vduse_vq_setup_kickfd(fd, UInt32(queue), kick) }
        if rc < 0 { throw .ioctl(what: "VDUSE_VQ_SETUP_KICKFD \(queue)", errno: -rc) }
    }

    public func detachKickFD(queue: Int) {
        _ = retryEINTR { vb_vduse_vq_setup_kickfd(fd, UInt32(queue), VB_VDUSE_EVENTFD_DEASSIGN) }
    }

    public func makeMemory(queue: Int) -> IOTLBMemory { IOTLBMemory(deviceFD: fd) }

    public func invalidate(_ memory: IOTLBMemory, start: UInt64, last: UInt64) {
        memory.invalidate(start: start, last: last)
    }
}
