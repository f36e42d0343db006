import CSys
import CVDUSE
import Glibc
import Logging

/// The thread that reads control requests from `/dev/vduse/NAME`, hands them
/// to the controller and writes every answer back. Owns a stop eventfd.
/// Backend I/O never runs here; the longest wait is draining in-flight I/O
/// when queues quiesce.
public final class ControlLoop<Transport: DeviceTransport>: @unchecked Sendable {
    let fd: Int32
    let controller: DeviceController<Transport>
    let logger: Logger
    let stopFD: Int32
    var thread = pthread_t()
    var running = false

    public init(deviceFD: Int32, controller: DeviceController<Transport>, logger: Logger) throws(VDUSEError) {
        fd = deviceFD
        self.controller = controller
        self.logger = logger
        let s = vb_eventfd(0, 1)
        guard s >= 0 else { throw .ioctl(what: "eventfd", errno: -s) }
        stopFD = s
    }

    deinit {
        stop()
        close(stopFD)
    }

    public func start() throws(VDUSEError) {
        let box = Unmanaged.passRetained(self as AnyObject)
        let rc = pthread_create(&thread, nil, { arg in
            let obj = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue()
            (obj as! any ControlRunnable).runControl()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw .ioctl(what: "pthread_create", errno: rc)
        }
        running = true
    }

    /// Stops the loop thread and waits for it.
    public func stop() {
        guard running else { return }
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
        pthread_join(thread, nil)
        running = false
    }

    func run() {
        let size = vb_vduse_request_size()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        var fds: (Int32, Int32) = (fd, stopFD)
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
                var r: Int
                repeat { r = write(fd, p.baseAddress, p.count) } while r < 0 && errno == EINTR
                return r
            }
            if wrote != MemoryLayout<vb_vduse_dev_response>.size {
                logger.error("control loop: cannot answer request \(message.requestID): \(String(cString: strerror(errno)))")
            }
        }
    }
}

protocol ControlRunnable: AnyObject {
    func runControl()
}

extension ControlLoop: ControlRunnable {
    func runControl() { run() }
}
