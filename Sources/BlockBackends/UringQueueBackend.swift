import SystemSupport
import CSys
import CAsyncIO
import Glibc

/// The io_uring file engine: one private ring and one eventfd per queue.
/// Reads and writes are readv/writev, flush is fsync(DATASYNC), discard and
/// write-zeroes are fallocate (PUNCH_HOLE or ZERO_RANGE, with KEEP_SIZE).
/// The eventfd is registered with the ring and is `completionFD`.
///
/// Rare cases are finished synchronously on the queue thread when their CQE
/// is reaped (a short transfer is completed with preadv/pwritev; a zeroing
/// mode the file system refuses falls back to the next one, then to writing
/// zeroes), or at prepare time when the ring cannot express them (more than
/// 1024 iovecs, a mode already known to be refused); those completions are
/// announced through the eventfd at `submit()`.
///
/// Files in memory (tmpfs, ramfs) take small transfers (up to `inlineLimit`)
/// synchronously at prepare time: such files cannot do non-blocking I/O
/// (no FMODE_NOWAIT), so io_uring would hand every one of them to an io-wq
/// worker thread (a wake-up and a thread switch per request, for a memory
/// copy that never waits for a disk). These completions are not announced
/// through the eventfd: the queue thread reaps right after every `submit()`.
/// File systems with non-blocking I/O (ext4, xfs, block devices) need no such
/// path: io_uring itself completes what the page cache holds without a worker.
final class UringQueueBackend: EventWaitingBackend {
    let completionFD: Int32
    let capacity: Int
    private(set) var inFlight = 0

    private let ring: OpaquePointer
    private let fd: Int32
    /// The fd as SQEs name it: 0 (registered file index) when `fixed`, else `fd`.
    private let sqeFD: Int32
    private let fixed: Int32
    private let ops: SyncFileOps
    private let slots: OpSlots
    private let immediate: CompletionRing
    /// Some op in `immediate` was finished for a rare case and wants the eventfd signalled.
    private var announceImmediate = false
    /// Transfers up to this many bytes run inline (memory-backed files only; else 0).
    let inlineLimit: UInt64
    static let memoryFileInlineLimit: UInt64 = 64 << 10
    private let cqeData: UnsafeMutablePointer<UInt64>
    private let cqeResult: UnsafeMutablePointer<Int32>
    /// Ops the kernel owns (prepared into the ring and not yet reaped).
    private var kernelOwned = 0
    /// Event slots (see `EventWaitingBackend`): read buffers, armed and fired
    /// bits, and a generation per slot so a cancelled read's CQE is ignored.
    private let eventBuffers: UnsafeMutablePointer<UInt64>
    private let eventGenerations: UnsafeMutablePointer<UInt32>
    private var eventsArmed: UInt32 = 0
    private var eventsFired: UInt32 = 0
    private static let eventFlag: UInt64 = 1 << 63
    private static let cancelFlag: UInt64 = 1 << 62

    /// Takes ownership of `fd` (closed on deinit, also when this throws).
    init(fd: Int32, alignment: Int, capacity capacityBytes: CapacityCell, depth: Int) throws(BackendError) {
        let efd: Int32
        do { efd = try EventFD().fd } catch {
            close(fd)
            throw .io(what: "eventfd", errno: error.errno.rawValue)
        }
        var err: Int32 = 0
        let entries = UInt32(depth + 4)  // + the event reads and their cancels
        var created = vb_uring_create(entries, UInt32(VB_URING_SETUP_SUBMIT_ALL), &err)
        if created == nil && err == -EINVAL {
            created = vb_uring_create(entries, 0, &err)  // kernel older than 5.18
        }
        guard let ring = created else {
            close(efd)
            close(fd)
            throw .engineUnavailable(engine: "uring", errno: -err)
        }
        let rc = vb_uring_register_eventfd(ring, efd)
        if rc < 0 {
            vb_uring_destroy(ring)
            close(efd)
            close(fd)
            throw .engineUnavailable(engine: "uring", errno: -rc)
        }
        // A registered file saves an fget/fput per op; optional.
        if vb_uring_register_file(ring, fd) == 0 {
            sqeFD = 0
            fixed = 1
        } else {
            sqeFD = fd
            fixed = 0
        }
        self.ring = ring
        self.fd = fd
        completionFD = efd
        capacity = depth
        ops = SyncFileOps(fd: fd, alignment: alignment, capacity: capacityBytes)
        inlineLimit = FileImage.isMemoryBacked(fd: fd) ? Self.memoryFileInlineLimit : 0
        slots = OpSlots(capacity: depth)
        immediate = CompletionRing(capacity: depth)
        cqeData = .allocate(capacity: depth)
        cqeResult = .allocate(capacity: depth)
        eventBuffers = .allocate(capacity: 2)
        eventBuffers.initialize(repeating: 0, count: 2)
        eventGenerations = .allocate(capacity: 2)
        eventGenerations.initialize(repeating: 0, count: 2)
    }

    deinit {
        // The kernel may still write into buffers of ops not reaped: wait for them.
        while kernelOwned > 0 {
            let rc = vb_uring_submit_and_wait(ring, 1)
            if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY { break }
            kernelOwned -= Int(vb_uring_reap(ring, cqeData, cqeResult, UInt32(capacity)))
        }
        vb_uring_destroy(ring)  // also cancels armed event reads
        close(completionFD)
        close(fd)
        cqeData.deallocate()
        cqeResult.deallocate()
        eventBuffers.deallocate()
        eventGenerations.deallocate()
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
        let slot = slots.acquire(op)
        finishPrepare(vb_uring_prep_fsync(ring, sqeFD, fixed, 1, UInt64(slot)), slot: slot)
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        let op = OpRecord(kind: .discard, tag: tag, offset: offset, length: length, iovecs: nil,
                          iovecCount: 0, unmap: true)
        inFlight += 1
        guard ops.punchHoleWorks, !ops.outOfRange(offset, length) else { return completeNow(op) }
        let slot = slots.acquire(op)
        finishPrepare(vb_uring_prep_fallocate(ring, sqeFD, fixed, SyncFileOps.punchHoleMode, offset,
                                              length, UInt64(slot)), slot: slot)
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        var op = OpRecord(kind: .writeZeroes, tag: tag, offset: offset, length: length, iovecs: nil,
                          iovecCount: 0, unmap: unmap)
        inFlight += 1
        guard let mode = ops.zeroingMode(unmap: unmap), !ops.outOfRange(offset, length) else { return completeNow(op) }
        op.fallocMode = mode
        let slot = slots.acquire(op)
        finishPrepare(vb_uring_prep_fallocate(ring, sqeFD, fixed, mode, offset, length, UInt64(slot)),
                      slot: slot)
    }

    @inline(__always)
    private func prepareTransfer(_ kind: OpRecord.Kind, offset: UInt64, iovecs: UnsafePointer<iovec>,
                                 count: Int, tag: UInt32) {
        let total = OpRecord.totalBytes(iovecs, count)
        let op = OpRecord(kind: kind, tag: tag, offset: offset, length: total, iovecs: iovecs,
                          iovecCount: count, unmap: false)
        inFlight += 1
        if total <= inlineLimit && count <= maxIovecsPerCall {
            return immediate.push(tag: tag, result: ops.run(op))    // reaped in this same pass
        }
        if count > maxIovecsPerCall || total > UInt64(Int32.max) || ops.outOfRange(offset, total) { return completeNow(op) }
        let slot = slots.acquire(op)
        let rc = kind == .read
            ? vb_uring_prep_readv(ring, sqeFD, fixed, iovecs, UInt32(count), offset, UInt64(slot))
            : vb_uring_prep_writev(ring, sqeFD, fixed, iovecs, UInt32(count), offset, UInt64(slot))
        finishPrepare(rc, slot: slot)
    }

    @inline(__always)
    private func finishPrepare(_ rc: Int32, slot: Int) {
        if rc == 0 {
            kernelOwned += 1
        } else {
            // No free SQE (only if an earlier submit could not push its SQEs): do it here.
            let op = slots[slot]
            slots.release(slot)
            completeNow(op)
        }
    }

    /// Runs `op` synchronously; its completion is announced at the next `submit()`.
    private func completeNow(_ op: OpRecord) {
        immediate.push(tag: op.tag, result: ops.run(op))
        announceImmediate = true
    }

    // MARK: submit / reap

    func submit() {
        pushSQEs()
        if immediate.unpublished > 0 {
            immediate.publish()
            if announceImmediate {
                announceImmediate = false
                EventFD(adopting: completionFD).signal()
            }
        }
    }

    /// Pushes every prepared SQE to the kernel. Transient refusals are retried a
    /// bounded number of times; SQEs still left are pushed by the next submit or reap.
    private func pushSQEs() {
        var retries = 0
        while vb_uring_sq_ready(ring) > 0 {
            let rc = vb_uring_submit(ring)
            if rc > 0 || rc == -EINTR { continue }
            if (rc == 0 || rc == -EAGAIN || rc == -EBUSY) && retries < 64 {
                retries += 1
                sched_yield()
                continue
            }
            break
        }
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        if vb_uring_sq_ready(ring) > 0 { pushSQEs() }
        var n = immediate.pop(into: buffer)
        while n < buffer.count {
            let want = min(buffer.count - n, capacity)
            let got = Int(vb_uring_reap(ring, cqeData, cqeResult, UInt32(want)))
            if got == 0 { break }
            var events = 0
            for i in 0..<got {
                let data = cqeData[i]
                if data & (Self.eventFlag | Self.cancelFlag) != 0 {
                    events += 1
                    if data & Self.eventFlag != 0 { noteEvent(data) }
                    continue
                }
                let slot = Int(truncatingIfNeeded: data)
                let op = slots[slot]
                slots.release(slot)
                buffer[n] = IOCompletion(tag: op.tag, result: finish(op, cqeResult[i]))
                n += 1
            }
            kernelOwned -= got - events
        }
        inFlight -= n
        // The buffer filled up: if more is waiting, keep the eventfd readable.
        if n == buffer.count && (vb_uring_cq_ready(ring) > 0 || immediate.published > 0) {
            EventFD(adopting: completionFD).signal()
        }
        return n
    }

    /// The final result of `op` whose CQE said `result`, finishing it synchronously when needed.
    @inline(__always)
    private func finish(_ op: OpRecord, _ result: Int32) -> Int32 {
        switch op.kind {
        case .read, .write:
            if result < 0 || UInt64(result) == op.length { return result }
            // Short transfer: move the rest synchronously.
            return ops.transfer(write: op.kind == .write, offset: op.offset, iovecs: op.iovecs!,
                                count: op.iovecCount, total: op.length, done: UInt64(result))
        case .flush:
            return result
        case .discard:
            if result == -EOPNOTSUPP { ops.noteUnsupported(mode: SyncFileOps.punchHoleMode) }
            return result
        case .writeZeroes:
            if result != -EOPNOTSUPP { return result }
            // The mode this op used is refused: remember it, and zero by the next best means.
            ops.noteUnsupported(mode: op.fallocMode)
            return ops.writeZeroes(offset: op.offset, length: op.length, unmap: op.unmap)
        }
    }
}

// MARK: - waiting on eventfds in the ring

extension UringQueueBackend {
    private func eventTag(_ slot: Int) -> UInt64 {
        Self.eventFlag | UInt64(eventGenerations[slot]) << 8 | UInt64(slot)
    }

    /// A CQE for an event read: the slot fired unless the read was superseded.
    private func noteEvent(_ data: UInt64) {
        let slot = Int(data & 0xff)
        guard slot < 2, UInt32(truncatingIfNeeded: data >> 8) == eventGenerations[slot] else { return }
        eventsArmed &= ~(1 << UInt32(slot))
        eventsFired |= 1 << UInt32(slot)
    }

    func armEvent(_ slot: Int, fd eventFD: Int32) {
        precondition(slot >= 0 && slot < 2)
        let bit = UInt32(1) << UInt32(slot)
        guard eventsArmed & bit == 0 else { return }
        var rc = vb_uring_prep_read(ring, eventFD, eventBuffers + slot, 8, 0, eventTag(slot))
        if rc == -EBUSY {
            pushSQEs()
            rc = vb_uring_prep_read(ring, eventFD, eventBuffers + slot, 8, 0, eventTag(slot))
        }
        if rc == 0 { eventsArmed |= bit }
    }

    func disarmEvents() {
        for slot in 0..<2 where eventsArmed & (1 << UInt32(slot)) != 0 {
            if vb_uring_prep_cancel(ring, eventTag(slot), Self.cancelFlag) == -EBUSY {
                pushSQEs()
                _ = vb_uring_prep_cancel(ring, eventTag(slot), Self.cancelFlag)
            }
            eventGenerations[slot] &+= 1
        }
        eventsArmed = 0
        eventsFired = 0
        pushSQEs()
    }

    func submitAndWait() {
        if immediate.unpublished > 0 { immediate.publish() }
        if immediate.published > 0 || vb_uring_cq_ready(ring) > 0 {
            pushSQEs()
            return
        }
        _ = vb_uring_submit_and_wait(ring, 1)
    }

    func takeFiredEvents() -> UInt32 {
        let f = eventsFired
        eventsFired = 0
        return f
    }
}
