import SystemSupport
import Glibc

/// The synchronous file engine: `submit()` runs every prepared op in order
/// with preadv/pwritev/fdatasync/fallocate on the calling thread, so its
/// completions are ready as soon as `submit()` returns (`completionFD == -1`).
/// Short transfers are continued until done. Owns its fd.
final class SyncQueueBackend: QueueBackend {
    let completionFD: Int32 = -1
    let capacity: Int
    private let ops: SyncFileOps
    private let pending: UnsafeMutablePointer<OpRecord>
    private var pendingCount = 0
    private let completions: CompletionRing

    var inFlight: Int { pendingCount + completions.count }

    /// Takes ownership of `fd` (closed on deinit).
    init(fd: Int32, alignment: Int, capacity capacityBytes: CapacityCell, depth: Int) {
        capacity = depth
        ops = SyncFileOps(fd: fd, alignment: alignment, capacity: capacityBytes)
        pending = .allocate(capacity: depth)
        pending.initialize(repeating: .empty, count: depth)
        completions = CompletionRing(capacity: depth)
    }

    deinit {
        pending.deallocate()
        close(ops.fd)
    }

    @inline(__always)
    private func enqueue(_ op: OpRecord) {
        precondition(inFlight < capacity, "more ops in flight than the queue handle's capacity")
        pending[pendingCount] = op
        pendingCount += 1
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        enqueue(OpRecord(kind: .read, tag: tag, offset: offset, length: OpRecord.totalBytes(iovecs, count),
                         iovecs: iovecs, iovecCount: count, unmap: false))
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        enqueue(OpRecord(kind: .write, tag: tag, offset: offset, length: OpRecord.totalBytes(iovecs, count),
                         iovecs: iovecs, iovecCount: count, unmap: false))
    }

    func prepareFlush(tag: UInt32) {
        enqueue(OpRecord(kind: .flush, tag: tag, offset: 0, length: 0, iovecs: nil, iovecCount: 0,
                         unmap: false))
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        enqueue(OpRecord(kind: .discard, tag: tag, offset: offset, length: length, iovecs: nil,
                         iovecCount: 0, unmap: true))
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        enqueue(OpRecord(kind: .writeZeroes, tag: tag, offset: offset, length: length, iovecs: nil,
                         iovecCount: 0, unmap: unmap))
    }

    func submit() {
        for i in 0..<pendingCount {
            let op = pending[i]
            completions.push(tag: op.tag, result: ops.run(op))
        }
        pendingCount = 0
        completions.publish()
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        completions.pop(into: buffer)
    }
}
