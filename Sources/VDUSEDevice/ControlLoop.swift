import CSys
import CVDUSE
import Glibc
import Logging
import SystemSupport

/// The thread that reads control requests from `/dev/vduse/NAME`, hands them
/// to the controller and writes every answer back. Owns a stop eventfd.
/// Backend I/O never runs here; the longest wait is draining in-flight I/O
/// when queues quiesce.
public final class ControlLoop<Transport: DeviceTransport>: @unchecked Sendable {
    let fd: Int32
    let controller: DeviceController<Transport>
    let logger: Logger
    let stopFD: EventFD
    var thread: NamedThread?

    public init(deviceFD: Int32, controller: DeviceController<Transport>, logger: Logger) throws(VDUSEError) {
        fd = deviceFD
        self.controller = controller
        self.logger = logger
        do { stopFD = try EventFD(nonBlocking: true) } catch { throw .system(error) }
    }

    deinit {
        stop()
        stopFD.close()
    }

    public func start() throws(VDUSEError) {
        do { thread = try NamedThread(name: "vduse-ctl", running: self) { $0.run() } } catch { throw .system(error) }
    }

    /// Stops the loop thread and waits for it.
    public func stop() {
        guard let t = thread else { return }
        stopFD.signal()
        t.join()
        thread = nil
    }

    func run() {
        let size = vb_vduse_request_size()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        var fds: (Int32, Int32) = (fd, stopFD.fd)
        var rev: (Int16, Int16) = (0, 0)
        while true {
            let n = withUnsafeMutablePointer(to: &fds) { fp in
                withUnsafeMutablePointer(to: &rev) { rp in
                    vb_poll_in(UnsafeRawPointer(fp).assumingMemoryBound(to: Int32.self),
                               UnsafeMutableRawPointer(rp).assumingMemoryBound(to: Int16.self), 2,
                               controller.retryAfterMillis)
                }
            }
            if n == -EINTR { continue }
            if n == 0 {
                controller.retryPending()
                continue
            }
            if n < 0 {
                logger.error("control loop: poll failed: \(String(cString: strerror(-n)))")
                return
            }
            if rev.1 != 0 { return }
            guard rev.0 != 0 else { continue }
            if rev.0 & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 && rev.0 & Int16(POLLIN) == 0 {
                logger.error("control loop: device fd closed")
                return
            }
            let got = read(fd, buffer.baseAddress, size)
            if got < 0 {
                let e = errno
                if e == EINTR || e == EAGAIN { continue }
                logger.error("control loop: read failed: \(String(cString: strerror(e)))")
                return
            }
            guard let message = ControlMessage.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<got])) else {
                logger.error("control loop: short control message (\(got) bytes)")
                continue
            }
            logger.trace("control request \(message)")
            var response = controller.handle(message).encode()
            let wrote = withUnsafeBytes(of: &response) { p in
                sysCallResult { write(fd, p.baseAddress, p.count) }
            }
            if wrote != MemoryLayout<vb_vduse_dev_response>.size {
                logger.error("control loop: cannot answer request \(message.requestID): \(String(cString: strerror(wrote < 0 ? Int32(-wrote) : EIO)))")
            }
        }
    }
}
