import SystemSupport
import CSys
import CAsyncIO
import Glibc

/// The Linux AIO (libaio) file engine: one private context and one eventfd
/// per queue. Reads, writes and flushes (IOCB_CMD_FDSYNC) go through
/// io_submit with the eventfd attached (io_set_eventfd), so it is
/// `completionFD`. Without O_DIRECT the kernel runs them synchronously inside
/// io_submit, which is correct but not asynchronous.
///
/// What AIO cannot express runs synchronously on the queue thread: discard
/// and write-zeroes (fallocate), a flush the kernel refuses (EINVAL from
/// io_submit: then fdatasync, and every later flush directly), the rest of a
/// short transfer, ops with more than 1024 iovecs. Their completions are
/// announced by writing to the eventfd in `submit()`, so a queue thread that
/// polls `completionFD` sees them like any other.
final class AioQueueBackend: QueueBackend {
    let completionFD: Int32
    let capacity: Int
    private(set) var inFlight = 0

    private let context: OpaquePointer
    private let fd: Int32
    private let ops: SyncFileOps
    private let slots: OpSlots
    private let immediate: CompletionRing
    /// Slots prepared since the last submit, in order.
    private let batch: UnsafeMutablePointer<UInt32>
    private var batchCount = 0
    private let eventData: UnsafeMutablePointer<UInt64>
    private let eventResult: UnsafeMutablePointer<Int64>
    /// Ops the kernel owns (accepted by io_submit and not yet reaped).
    private var kernelOwned = 0
    private var fdsyncRefused = false

    /// Takes ownership of `fd` (closed on deinit, also when this throws).
    init(fd: Int32, alignment: Int, capacity capacityBytes: CapacityCell, depth: Int) throws(BackendError) {
        let efd: Int32
        do { efd = try EventFD().fd } catch {
            close(fd)
            throw .io(what: "eventfd", errno: error.errno.rawValue)
        }
        var err: Int32 = 0
        guard let context = vb_aio_create(UInt32(depth), UInt32(depth), &err) else {
            close(efd)
            close(fd)
            throw .engineUnavailable(engine: "aio", errno: -err)
        }
        self.context = context
        self.fd = fd
        completionFD = efd
        capacity = depth
        ops = SyncFileOps(fd: fd, alignment: alignment, capacity: capacityBytes)
        slots = OpSlots(capacity: depth)
        immediate = CompletionRing(capacity: depth)
        batch = .allocate(capacity: depth)
        eventData = .allocate(capacity: depth)
        eventResult = .allocate(capacity: depth)
    }

    deinit {
        vb_aio_destroy(context)  // io_destroy waits for outstanding iocbs
        close(completionFD)
        close(fd)
        batch.deallocate()
        eventData.deallocate()
        eventResult.deallocate()
    }

    // MARK: prepare

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        prepareTransfer(.read, offset: offset, iovecs: iovecs, count: count, tag: tag)
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        prepareTransfer(.write, offset: offset, iovecs: iovecs, count: count, tag: tag)
    }

    func prepareFlush(tag: UInt32) {
        let op = OpRecord(kind: .flush, tag: tag, offset: 0, length: 0, iovecs: nil, iovecCount: 0,
                          unmap: false)
        inFlight += 1
        if fdsyncRefused { return completeNow(op) }
        let slot = slots.acquire(op)
        vb_aio_prep_fdsync(context, UInt32(slot), fd, completionFD, UInt64(slot))
        batch[batchCount] = UInt32(slot)
        batchCount += 1
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        inFlight += 1
        completeNow(OpRecord(kind: .discard, tag: tag, offset: offset, length: length, iovecs: nil,
                             iovecCount: 0, unmap: true))
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        inFlight += 1
        completeNow(OpRecord(kind: .writeZeroes, tag: tag, offset: offset, length: length, iovecs: nil,
                             iovecCount: 0, unmap: unmap))
    }

    @inline(__always)
    private func prepareTransfer(_ kind: OpRecord.Kind, offset: UInt64, iovecs: UnsafePointer<iovec>,
                                 count: Int, tag: UInt32) {
        let total = OpRecord.totalBytes(iovecs, count)
        let op = OpRecord(kind: kind, tag: tag, offset: offset, length: total, iovecs: iovecs,
                          iovecCount: count, unmap: false)
        inFlight += 1
        if count > maxIovecsPerCall || total > UInt64(Int32.max) || ops.outOfRange(offset, total) { return completeNow(op) }
        let slot = slots.acquire(op)
        if kind == .read {
            vb_aio_prep_preadv(context, UInt32(slot), fd, iovecs, Int32(count), offset, completionFD,
                               UInt64(slot))
        } else {
            vb_aio_prep_pwritev(context, UInt32(slot), fd, iovecs, Int32(count), offset, completionFD,
                                UInt64(slot))
        }
        batch[batchCount] = UInt32(slot)
        batchCount += 1
    }

    /// Runs `op` synchronously; its completion is announced at `submit()`.
    private func completeNow(_ op: OpRecord) {
        immediate.push(tag: op.tag, result: ops.run(op))
    }

    // MARK: submit / reap

    func submit() {
        var done = 0
        var retries = 0
        while done < batchCount {
            let rc = Int(vb_aio_submit(context, batch + done, UInt32(batchCount - done)))
            if rc > 0 {
                done += rc
                kernelOwned += rc
                continue
            }
            if rc == -Int(EINTR) { continue }
            if (rc == 0 || rc == -Int(EAGAIN)) && retries < 64 {
                retries += 1
                sched_yield()
                continue
            }
            // The kernel refused batch[done]: complete it here, then go on with the rest.
            let slot = Int(batch[done])
            let op = slots[slot]
            slots.release(slot)
            done += 1
            let error = rc == 0 ? -EAGAIN : Int32(truncatingIfNeeded: rc)
            if op.kind == .flush && error == -EINVAL {
                fdsyncRefused = true
                immediate.push(tag: op.tag, result: ops.flush())
            } else {
                immediate.push(tag: op.tag, result: error)
            }
        }
        batchCount = 0
        if immediate.unpublished > 0 {
            immediate.publish()
            EventFD(adopting: completionFD).signal()
        }
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        var n = immediate.pop(into: buffer)
        while n < buffer.count && kernelOwned > 0 {
            let want = min(buffer.count - n, capacity)
            let got = Int(vb_aio_getevents(context, eventData, eventResult, UInt32(want)))
            if got == -Int(EINTR) { continue }
            if got <= 0 { break }
            for i in 0..<got {
                let slot = Int(truncatingIfNeeded: eventData[i])
                let op = slots[slot]
                slots.release(slot)
                buffer[n] = IOCompletion(tag: op.tag, result: finish(op, eventResult[i]))
                n += 1
            }
            kernelOwned -= got
        }
        inFlight -= n
        // The buffer filled up: if more may be waiting, keep the eventfd readable.
        if n == buffer.count && (kernelOwned > 0 || immediate.published > 0) {
            EventFD(adopting: completionFD).signal()
        }
        return n
    }

    /// The final result of `op` whose event said `result`, finishing it synchronously when needed.
    @inline(__always)
    private func finish(_ op: OpRecord, _ result: Int64) -> Int32 {
        switch op.kind {
        case .read, .write:
            if result < 0 || UInt64(result) == op.length { return Int32(truncatingIfNeeded: result) }
            return ops.transfer(write: op.kind == .write, offset: op.offset, iovecs: op.iovecs!,
                                count: op.iovecCount, total: op.length, done: UInt64(result))
        case .flush:
            if result == -Int64(EINVAL) {
                fdsyncRefused = true
                return ops.flush()
            }
            return Int32(truncatingIfNeeded: result)
        case .discard, .writeZeroes:
            return Int32(truncatingIfNeeded: result)  // never submitted to AIO
        }
    }
}
