import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc
import ZstdImage

/// Reads a whole backend sequentially from one queue handle, `depth` reads of
/// `blockSize` in flight, sleeping on the handle's completion fd as a queue
/// thread does (for `vduse-blk image bench-seq`; never a timed assertion in
/// tests). Returns bytes per second, or nil if any read failed. Owns only
/// one run's buffers.
public enum SequentialReadBenchmark {
    public static func run(factory: any BlockBackendFactory, queueIndex: Int = 0, blockSize: Int = 1 << 20,
                           depth: Int = 1) throws(BackendError) -> Double? {
        let handle = try factory.makeQueueBackend(queueIndex: queueIndex, depth: depth)
        let size = factory.geometry.capacityBytes
        let buffers = (0..<depth).map { _ in UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 4096) }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: depth)
        defer {
            buffers.forEach { $0.deallocate() }
            iovs.deallocate()
        }
        var completions = [IOCompletion](repeating: IOCompletion(tag: 0, result: 0), count: depth)
        var next: UInt64 = 0
        var outstanding = 0
        var failed = false
        let started = monotonicSeconds()
        func issue(_ slot: Int) {
            let length = Int(min(UInt64(blockSize), size - next))
            iovs[slot] = iovec(iov_base: buffers[slot], iov_len: length)
            handle.prepareRead(offset: next, iovecs: iovs + slot, count: 1, tag: UInt32(slot))
            next += UInt64(length)
            outstanding += 1
        }
        for slot in 0..<depth where next < size { issue(slot) }
        handle.submit()
        while outstanding > 0 {
            let n = completions.withUnsafeMutableBufferPointer { handle.reap(into: $0) }
            if n == 0 {
                var p = pollfd(fd: handle.completionFD, events: Int16(POLLIN), revents: 0)
                if handle.completionFD >= 0, poll(&p, 1, 1000) > 0 {
                    var v: UInt64 = 0
                    _ = read(handle.completionFD, &v, 8)
                }
                continue
            }
            var issued = false
            for i in 0..<n {
                outstanding -= 1
                if completions[i].result < 0 { failed = true }
                if next < size, !failed {
                    issue(Int(completions[i].tag))
                    issued = true
                }
            }
            if issued { handle.submit() }
        }
        let seconds = monotonicSeconds() - started
        return failed ? nil : Double(size) / max(seconds, 1e-9)
    }
}
