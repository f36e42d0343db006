import CSys
import CVDUSE
import Dispatch
import Glibc
import Synchronization
import VDUSEDevice

/// `destroy` of a device whose daemon is dead (issue 14, item 5): never
/// wedge the vdpa bus. With requests in flight, `vdpa dev del` would wait
/// forever in blk_mq_freeze_queue_wait: refuse and say how to recover.
/// Without, unbind while answering the device's control messages here, so
/// the kernel does not wait msg_timeout for each, and report progress.
enum DeadDeviceDestroyer {
    /// Handles `destroy NAME` when NAME exists and no live daemon holds its
    /// state directory. Returns false if it did not apply (let the plain path run).
    static func destroy(name: String, control: VDUSEControl) throws(VDUSEError) -> Bool {
        guard access("/dev/vduse/\(name)", F_OK) == 0 else { return false }
        if DeviceStateDirectory.livingOwner(of: name) != nil { return false }
        let state = DeviceStateDirectory.path(for: name)
        let bound = VdpaTool.isBound(name: name)
        let logged = InflightLogFile.inspect(path: "\(state)/inflight")?.inflight ?? 0
        let pending = bound ? max(logged, blockLayerInflight(name: name)) : 0
        if pending > 0 {
            throw .attach("\(name) has \(pending) request(s) in flight and its daemon is gone: unbinding it now "
                + "would hang the vdpa bus. Run the same `vduse-blk create \(name) ...` again: it adopts the device "
                + "and completes them; then stop that daemon with SIGTERM (or run destroy again).")
        }
        let t0 = monotonicSeconds()
        if bound {
            progress("\(name): its daemon is gone; unbinding it and answering its control messages here")
            let fd = open("/dev/vduse/\(name)", O_RDWR | O_CLOEXEC)
            let stop = Atomic<Bool>(false)
            let done = DispatchSemaphore(value: 0)
            if fd >= 0 {
                let box = FDBox(fd: fd)
                DispatchQueue.global().async {
                    answerAll(fd: box.fd, stop: stop)
                    done.signal()
                }
            } else {
                progress("\(name): cannot open /dev/vduse/\(name) (\(String(cString: strerror(errno)))): "
                    + "the kernel may wait up to msg_timeout per message")
                done.signal()
            }
            do { try VdpaTool.delete(name: name) } catch {
                stop.store(true, ordering: .releasing)
                done.wait()
                if fd >= 0 { close(fd) }
                throw error
            }
            stop.store(true, ordering: .releasing)
            done.wait()
            if fd >= 0 { close(fd) }
            progress("\(name): unbound after \(elapsed(t0))")
        }
        for attempt in 0..<50 {
            do {
                try control.destroyDevice(name: name)
                break
            } catch {
                if case .busy = error, attempt < 49 {
                    if attempt % 10 == 9 { progress("\(name): still busy after \(elapsed(t0)), retrying") }
                    usleep(100_000)
                    continue
                }
                throw error
            }
        }
        unlink("\(state)/inflight")
        unlink("\(state)/backend")
        unlink("\(state)/lock")
        rmdir(state)
        progress("\(name): destroyed after \(elapsed(t0))")
        return true
    }

    /// Requests the guest's block layer has outstanding on the device's
    /// disk (virtio-vdpa: /sys/block/vdX/inflight), 0 if unknown.
    static func blockLayerInflight(name: String) -> Int {
        guard let disk = VdpaTool.blockDevice(name: name) else { return 0 }
        let fd = open("/sys/block/\(disk)/inflight", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buf, 63)
        guard n > 0 else { return 0 }
        return String(decoding: buf[0..<n], as: UTF8.self).split(separator: " ")
            .compactMap { Int(String($0.filter { $0.isNumber })) }.reduce(0, +)
    }

    final class FDBox: @unchecked Sendable {
        let fd: Int32
        init(fd: Int32) { self.fd = fd }
    }

    /// Answers every control request OK until `stop` (GET_VQ_STATE: 0; the
    /// device is being removed, nothing is in flight).
    static func answerAll(fd: Int32, stop: borrowing Atomic<Bool>) {
        let size = vb_vduse_request_size()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        while !stop.load(ordering: .acquiring) {
            var f = fd
            var rev: Int16 = 0
            guard vb_poll_in(&f, &rev, 1, 100) > 0 else { continue }
            let got = read(fd, buffer.baseAddress, size)
            guard got > 0, let m = ControlMessage.decode(UnsafeRawBufferPointer(rebasing: buffer[0..<got])) else {
                continue
            }
            var response: ControlResponse
            switch m {
            case .getVQState(let id, let q): response = ControlResponse(requestID: id, ok: true, vqState: (q, 0))
            default: response = ControlResponse(requestID: m.requestID, ok: true)
            }
            var raw = response.encode()
            _ = withUnsafeBytes(of: &raw) { write(fd, $0.baseAddress, $0.count) }
        }
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func elapsed(_ t0: Double) -> String {
        let s = monotonicSeconds() - t0
        return s < 10 ? "\(Int(s * 1000)) ms" : "\(Int(s)) s"
    }

    static func progress(_ s: String) {
        let line = "vduse-blk: \(s)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}
