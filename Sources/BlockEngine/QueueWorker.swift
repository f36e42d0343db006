import BlockBackends
import CSys
import Glibc
import Logging
import SystemSupport
import VirtioBlk
import VirtioCore

/// Settings one queue worker runs with.
public struct QueueWorkerConfig: Sendable {
    public var queueIndex: Int
    public var addresses: QueueAddresses
    public var features: UInt64
    /// Resume point (0 for a fresh queue).
    public var startAvail: UInt16
    /// Spin this long on the avail index before sleeping on the kick fd.
    public var pollMicros: Int
    /// Sleep in the backend's ring (io_uring) when it can watch the kick fd,
    /// instead of in poll() (the default: measured at least as fast in the
    /// guest benchmark, see README Performance).
    public var ringWait: Bool
    /// This queue's in-flight log (nil: not logged). The worker assumes the
    /// caller has `begin`-ed it (fresh queue) or `recover`-ed it (adopted).
    public var log: InflightQueueLog?
    /// Heads consumed by a previous daemon and never returned (from the
    /// log's recovery, in submission order): served first, before the avail ring.
    public var resubmit: [UInt16]
    /// Submission number to continue the log from (after recovery).
    public var nextSeq: UInt64
    /// The device's QoS limits, shared by all its queues (nil: never limited).
    public var qos: QoSLimiter?
    /// Counters to continue (the queue's across resets); nil: the worker makes its own.
    public var counters: QueueCounters?

    public init(queueIndex: Int, addresses: QueueAddresses, features: UInt64, startAvail: UInt16 = 0,
                pollMicros: Int = 0, ringWait: Bool = false, log: InflightQueueLog? = nil,
                resubmit: [UInt16] = [], nextSeq: UInt64 = 1, qos: QoSLimiter? = nil,
                counters: QueueCounters? = nil) {
        self.queueIndex = queueIndex
        self.addresses = addresses
        self.features = features
        self.startAvail = startAvail
        self.pollMicros = pollMicros
        self.ringWait = ringWait
        self.log = log
        self.resubmit = resubmit
        self.nextSeq = max(nextSeq, 1)
        self.qos = qos
        self.counters = counters
    }
}

/// Serves one virtqueue on its own thread: drains every available chain,
/// parses it, hands the whole batch to its private backend handle in one
/// submit, reaps completions, publishes used entries and sends at most one
/// interrupt per batch. Owns its ring state, request slots, backend handle and
/// guest-memory view; shares nothing with other queues. Driver mistakes become
/// status bytes; a ring it cannot trust stops the queue (NEEDS_RESET).
public final class QueueWorker<Memory: GuestMemory>: @unchecked Sendable {
    public let config: QueueWorkerConfig
    public let control: WorkerControl
    let memory: Memory
    let backend: any QueueBackend
    let parser: BlkRequestParser
    let sink: any InterruptSink
    let kickFD: Int32
    let logger: Logger
    let slots: RequestSlots
    let completions: UnsafeMutableBufferPointer<IOCompletion>
    let indirect: Bool
    /// Set when the backend's ring can also wait on the kick and wake eventfds:
    /// the thread then sleeps in one submit-and-wait instead of poll().
    let eventBackend: (any EventWaitingBackend)?
    var queue: SplitQueue?
    var inFlight = 0
    var broken = false
    /// The in-flight log (copied out of the config for the hot path).
    let log: InflightQueueLog?
    /// Next submission number written to the log.
    var seq: UInt64
    /// Heads completed since the last publish (their log flags are cleared after it).
    let unpublished: UnsafeMutablePointer<UInt16>
    var unpublishedCount = 0
    /// Recovered heads not yet resubmitted (taken on the first pass).
    var pendingResubmit: [UInt16]
    /// Test hook: log stores of the next publish to perform before the worker
    /// "dies" (stops touching the ring and the log, as after a SIGKILL).
    /// -1: off. 0: dies right after used.idx is published; k: after k heads are cleared.
    var crashAfterPublishSteps = -1
    /// Set once the crash hook fired.
    var dead = false
    // ---- QoS (QueueWorker+QoS.swift) ----
    /// The device's limiter (nil: never limited).
    let qos: QoSLimiter?
    /// The same, for the per-request check: no retain/release (whose refcount
    /// would be a cache line every queue of the device writes).
    let qosRef: Unmanaged<QoSLimiter>?
    /// A parsed request the limiter holds back: nothing more is consumed until it starts.
    var qosHeld: UInt16?
    /// How long the held request still waits (ns), from the limiter's last answer.
    var qosWaitNanos: UInt64 = 0
    // ---- end QoS ----
    /// This queue's request counters and service-time histogram (written
    /// only by this worker's thread; read by the statistics side).
    public let counters: QueueCounters
    /// Requests completed, for statistics (from `counters`; any thread).
    public var completedRequests: Int { Int(counters.completed) }

    public init(config: QueueWorkerConfig, memory: Memory, backend: any QueueBackend,
                parameters: BlkDeviceParameters, sink: any InterruptSink, kickFD: Int32,
                logger: Logger) throws(EngineError) {
        self.config = config
        self.control = try WorkerControl()
        control.availIndex.store(UInt32(config.startAvail), ordering: .relaxed)
        self.memory = memory
        self.backend = backend
        self.parser = BlkRequestParser(parameters: parameters)
        self.sink = sink
        self.kickFD = kickFD
        self.logger = logger
        let size = Int(config.addresses.size)
        slots = RequestSlots(count: size, segmentsPerSlot: Int(parameters.segMax) + 18)
        completions = .allocate(capacity: max(size, 1))
        completions.initialize(repeating: IOCompletion(tag: 0, result: 0))
        indirect = config.features & VirtioFeature.ringIndirectDesc != 0
        eventBackend = config.ringWait ? backend as? any EventWaitingBackend : nil
        log = config.log
        seq = config.nextSeq
        unpublished = .allocate(capacity: max(size, 1))
        pendingResubmit = config.resubmit
        qos = config.qos
        qosRef = config.qos.map { Unmanaged.passUnretained($0) }
        qos?.attach(control)
        counters = config.counters ?? QueueCounters(queueIndex: config.queueIndex)
        counters.setInFlight(0)
        counters.setBroken(false)
    }

    deinit {
        completions.deallocate()
        unpublished.deallocate()
    }

    /// Starts the queue thread (joined by `control.stop()`).
    public func start() {
        do {
            let thread = try NamedThread(name: "vq-\(config.queueIndex)", running: self) { $0.loop() }
            control.thread.store(UInt(thread.pthread), ordering: .releasing)
        } catch {
            logger.error("queue \(config.queueIndex): cannot start thread (\(error))")
            markBroken()
            control.availIndex.store(UInt32(config.startAvail), ordering: .releasing)
            control.exited.signal()
        }
    }

    func markBroken(_ error: QueueError? = nil) {
        if let error { logger.error("queue \(config.queueIndex): \(error); device needs reset") }
        broken = true
        control.broken.store(true, ordering: .releasing)
        counters.setBroken(true)
    }

    // MARK: - the loop

    func loop() {
        "vq-\(config.queueIndex)".withCString { vb_set_thread_name($0) }
        openQueue()
        var fds: (Int32, Int32, Int32) = (control.wakeFD, kickFD, backend.completionFD)
        var revents: (Int16, Int16, Int16) = (0, 0, 0)
        while true {
            switch control.current {
            case .run: break
            case .pause:
                quiesce()
                control.parked.signal()
                control.resumed.wait()
                if control.current == .stop { return finish() }
                if var q = queue, !broken {
                    do throws(QueueError) { try q.remap(memory: memory); queue = q } catch { markBroken(error) }
                }
                continue
            case .stop:
                quiesce()
                return finish()
            }

            let worked = broken ? false : serviceOnce()
            if worked { continue }
            if !broken, qosHeld == nil, config.pollMicros > 0, spin() { continue }
            if !broken, qosHeld == nil, var q = queue {
                do throws(QueueError) {
                    let more = try q.enableNotifications()
                    queue = q
                    if more { continue }
                } catch { markBroken(error) }
            }
            if let ev = eventBackend, qosHeld == nil {
                armEvents(ev)
                ev.submitAndWait()
                _ = reap()
                if !broken, var q = queue { q.disableNotifications(); queue = q }
                continue
            }
            // The completion eventfd is watched only while ops are in flight.
            // An op that completed inline was reaped in the same pass but still
            // signalled it: watching it then woke the thread once more per
            // request for nothing (two extra syscalls per request at QD1).
            let nfds: Int32 = backend.completionFD >= 0 && inFlight > 0 ? 3 : 2
            revents = (0, 0, 0)
            control.sleeps.store(control.sleeps.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            let n = withUnsafeMutablePointer(to: &fds) { fp in
                withUnsafeMutablePointer(to: &revents) { rp in
                    vb_poll_in(UnsafeRawPointer(fp).assumingMemoryBound(to: Int32.self),
                               UnsafeMutableRawPointer(rp).assumingMemoryBound(to: Int16.self), nfds, qosPollTimeout())
                }
            }
            if n < 0 && n != -EINTR {
                logger.error("queue \(config.queueIndex): poll failed: \(String(cString: strerror(-n)))")
                markBroken()
            }
            if revents.0 != 0 { drainEventFD(control.wakeFD) }
            if revents.1 != 0 { drainEventFD(kickFD) }
            if revents.2 != 0 { drainEventFD(backend.completionFD) }
            if !broken, var q = queue { q.disableNotifications(); queue = q }
        }
    }

    /// Resolves the rings (first thing the queue thread does).
    func openQueue() {
        do throws(QueueError) {
            queue = try SplitQueue(addresses: config.addresses, memory: memory,
                                   eventIdx: config.features & VirtioFeature.ringEventIdx != 0,
                                   startAvail: config.startAvail)
        } catch {
            markBroken(error)
        }
    }

    /// Re-arms the ring's reads of the kick and wake eventfds once they fired.
    @inline(__always)
    func armEvents(_ ev: any EventWaitingBackend) {
        _ = ev.takeFiredEvents()
        ev.armEvent(0, fd: kickFD)
        ev.armEvent(1, fd: control.wakeFD)
    }

    func finish() {
        qos?.detach(control)
        eventBackend?.disarmEvents()
        control.availIndex.store(UInt32(queue?.lastAvailIdx ?? config.startAvail), ordering: .releasing)
        control.exited.signal()
    }

    /// One pass: consume, submit, reap, publish, notify. True if anything moved.
    func serviceOnce() -> Bool {
        let consumed = consumeAvailable()
        let reaped = reap()
        publishAndNotify()
        return consumed + reaped > 0
    }

    /// Busy-polls the avail index for up to `pollMicros`; true if work arrived.
    func spin() -> Bool {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let limit = Int64(config.pollMicros) * 1000
        while true {
            if let q = queue, (try? q.pendingCount()) ?? 1 > 0 { return true }
            if inFlight > 0, backend.completionFD < 0 { return true }
            if inFlight > 0, reap() > 0 { publishAndNotify(); return true }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Int64(now.tv_sec - start.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec - start.tv_nsec) > limit {
                return false
            }
        }
    }

    /// Walks the chain of `head`, parses it into `slot` and prepares its backend
    /// op: true if one was prepared (false: it completed at once, e.g. GET_ID
    /// or a request the parser refused).
    @inline(__always)
    func prepare(head: UInt16, slot: UnsafeMutablePointer<RequestSlot>, queue q: inout SplitQueue,
                 now: UInt64, limited: Bool = false) throws(QueueError) -> Bool {
        slot.pointee.startNanos = now
        try DescriptorChainWalker.walk(head: head, table: q.descriptorTable, queueSize: q.size,
                                       memory: memory, indirectAllowed: indirect, into: &slot.pointee.segments)
        slot.pointee.request = parser.parse(&slot.pointee.segments)
        if limited, let qosRef, !qosAdmit(qosRef, slot) { qosHeld = head; return false }  // QoS: held, not completed
        if dispatch(slot: slot, tag: UInt32(head)) { return true }
        complete(head: head, slot: slot, result: 0, queue: &q, now: now)
        return false
    }

    /// Takes every available chain, parses it and prepares backend ops; one submit at the end.
    func consumeAvailable() -> Int {
        guard var q = queue else { return 0 }
        var consumed = 0
        var prepared = 0
        // One clock read per consumed batch: its requests' service time starts here.
        var now: UInt64 = 0
        defer { queue = q }
        do throws(QueueError) {
            if !pendingResubmit.isEmpty {
                now = QueueCounters.now()
                // Heads a previous daemon consumed (still flagged in the log, in
                // submission order): the same requests again, before new ones.
                let heads = pendingResubmit
                pendingResubmit = []
                for head in heads {
                    guard head < q.size else { throw .headOutOfRange(head) }
                    consumed += 1
                    let slot = slots.slots + Int(head)
                    guard !slot.pointee.busy else { throw .headInFlight(head) }
                    if try prepare(head: head, slot: slot, queue: &q, now: now) { prepared += 1 }
                }
            }
            // QoS: a held request starts first; while one is held nothing more is consumed.
            while qosReleaseHeld(queue: &q, prepared: &prepared, started: &consumed), qosHeld == nil {
                let pending = try q.pendingCount()
                if pending == 0 { break }
                if now == 0 { now = QueueCounters.now() }
                for _ in 0..<pending {
                    let head = try q.popHead()
                    consumed += 1
                    let slot = slots.slots + Int(head)
                    guard !slot.pointee.busy else { throw .headInFlight(head) }
                    if let log {
                        log.markInflight(head: head, seq: seq)
                        seq &+= 1
                    }
                    if try prepare(head: head, slot: slot, queue: &q, now: now, limited: qosRef != nil) { prepared += 1 } else if qosHeld != nil { break }
                }
            }
        } catch {
            markBroken(error)
        }
        if prepared > 0 { backend.submit() }
        if consumed > 0 {
            control.availIndex.store(UInt32(q.lastAvailIdx), ordering: .releasing)
            counters.setInFlight(inFlight)
        }
        return consumed
    }

    /// Prepares the backend op for a parsed request; false if it completes at once.
    func dispatch(slot: UnsafeMutablePointer<RequestSlot>, tag: UInt32) -> Bool {
        let iov = slot.pointee.segments.storage
        switch slot.pointee.request.operation {
        case .read(let offset, let start, let count, let bytes):
            if bytes == 0 { return false }
            backend.prepareRead(offset: offset, iovecs: iov + start, count: count, tag: tag)
        case .write(let offset, let start, let count, let bytes):
            if bytes == 0 { return false }
            backend.prepareWrite(offset: offset, iovecs: iov + start, count: count, tag: tag)
        case .flush:
            backend.prepareFlush(tag: tag)
        case .discard(let offset, let length):
            backend.prepareDiscard(offset: offset, length: length, tag: tag)
        case .writeZeroes(let offset, let length, let unmap):
            backend.prepareWriteZeroes(offset: offset, length: length, unmap: unmap, tag: tag)
        case .getID, .fail:
            return false
        }
        slot.pointee.busy = true
        inFlight += 1
        return true
    }

    /// Writes the status byte and the used element for a finished request and
    /// counts it (`now`: the clock of the batch completing it).
    func complete(head: UInt16, slot: UnsafeMutablePointer<RequestSlot>, result: Int32, queue q: inout SplitQueue,
                  now: UInt64) {
        let request = slot.pointee.request
        var status = BlkStatus.ok
        var written = request.writtenOnSuccess
        let kind: RequestKind
        switch request.operation {
        case .fail(let s):
            status = s
            written = request.status == nil ? 0 : 1
            kind = s == BlkStatus.unsupported ? .unsupported : .refused
        case .read(_, _, _, let bytes):
            kind = .read
            if bytes > 0 && Int64(result) != Int64(bytes) { status = BlkStatus.ioError } else { counters.recordBytes(read: bytes, written: 0) }
        case .write(_, _, _, let bytes):
            kind = .write
            if bytes > 0 && Int64(result) != Int64(bytes) { status = BlkStatus.ioError } else { counters.recordBytes(read: 0, written: bytes) }
        case .flush: kind = .flush
        case .discard: kind = .discard
        case .writeZeroes: kind = .writeZeroes
        case .getID: kind = .getID
        }
        if result < 0 { status = BlkStatus.ioError }
        if status == BlkStatus.ioError, kind.rawValue <= RequestKind.writeZeroes.rawValue {
            counters.recordFailure(kind, result: Int64(result))
        }
        counters.recordCompletion(kind, nanos: now &- slot.pointee.startNanos)
        if let p = request.status { p.pointee = status } else { written = 0 }
        q.addUsed(head: head, length: written)
        if log != nil, unpublishedCount < Int(q.size) {
            unpublished[unpublishedCount] = head
            unpublishedCount += 1
        }
    }

    /// Collects finished backend ops and completes their requests.
    func reap() -> Int {
        guard inFlight > 0 || eventBackend != nil, var q = queue else {
            if let ev = eventBackend { _ = ev.reap(into: completions) }  // broken queue: events only
            return 0
        }
        var total = 0
        // One clock read per reaped batch: the end of its requests' service time.
        var now: UInt64 = 0
        while true {
            let n = backend.reap(into: completions)
            if n == 0 { break }
            if now == 0 { now = QueueCounters.now() }
            for i in 0..<n {
                let c = completions[i]
                let head = UInt16(truncatingIfNeeded: c.tag)
                guard Int(head) < slots.count else { continue }
                let slot = slots.slots + Int(head)
                guard slot.pointee.busy else { continue }
                slot.pointee.busy = false
                inFlight -= 1
                complete(head: head, slot: slot, result: c.result, queue: &q, now: now)
            }
            total += n
            if n < completions.count { break }
        }
        if total > 0 { counters.setInFlight(inFlight) }
        queue = q
        return total
    }

    func publishAndNotify() {
        guard var q = queue, !dead else { return }
        if crashAfterPublishSteps != -1, crashAfterPublishSteps < -1 { dead = true; return }
        let published = q.publishUsed()
        if published, let log {
            // used.idx is out (a release store): only now are these heads back
            // with the driver; then the log's used index follows (see InflightQueueLog).
            if crashAfterPublishSteps >= 0 { return crashPublish(log, q) }
            for i in 0..<unpublishedCount { log.clearPublished(head: unpublished[i]) }
            log.recordUsed(q.publishedUsedIdx)
            unpublishedCount = 0
        }
        if published, q.shouldInterrupt() {
            _ = sink.interrupt(queue: config.queueIndex)
        }
        queue = q
    }

    /// The crash hook's publish: the ring publish, then only the first
    /// `crashAfterPublishSteps` log stores, then nothing ever again.
    func crashPublish(_ log: InflightQueueLog, _ q: SplitQueue) {
        var steps = crashAfterPublishSteps
        for i in 0..<unpublishedCount where steps > 0 {
            log.clearPublished(head: unpublished[i])
            steps -= 1
        }
        if steps > 0 { log.recordUsed(q.publishedUsedIdx) }
        queue = q
        dead = true
    }

    /// Waits until every in-flight op has completed and been published.
    func quiesce() {
        qosForceHeld()
        while inFlight > 0 {
            if reap() == 0 {
                let fd = backend.completionFD
                if fd >= 0 {
                    var f = fd
                    var r: Int16 = 0
                    if vb_poll_in(&f, &r, 1, 100) > 0 { drainEventFD(fd) }
                }
            }
            publishAndNotify()
        }
        publishAndNotify()
    }

    func drainEventFD(_ fd: Int32) {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }
}

/// Type-erased entry point for the thread trampoline.
// MARK: - synchronous drive (fuzzers and tests only)

extension QueueWorker {
    /// Resolves the rings as the queue thread does when it starts, but on the
    /// caller's thread and without starting one. Then drive the worker with
    /// `serviceOnceSynchronously()`. Never combine with `start()`.
    @_spi(Fuzzing) public func openQueueSynchronously() { openQueue() }

    /// One pass of the thread's loop body (consume, submit, reap, publish,
    /// notify) on the caller's thread; nothing once the queue is broken.
    /// True if anything moved. With a synchronous backend (completionFD -1)
    /// every request consumed in the pass is completed and published by it.
    @_spi(Fuzzing) public func serviceOnceSynchronously() -> Bool { broken || dead ? false : serviceOnce() }

    /// Test hook: the next publish performs used.idx and then only `steps`
    /// log stores (head clears, then the used index) before the worker dies
    /// as a SIGKILL would leave it: nothing drained, nothing more written.
    @_spi(Fuzzing) public func crashDuringNextPublish(afterLogStores steps: Int) { crashAfterPublishSteps = steps }

    /// Test hook: the worker dies at its next publish, before used.idx is
    /// stored (completions already written as used elements stay invisible).
    @_spi(Fuzzing) public func crashBeforeNextPublish() { crashAfterPublishSteps = -2 }

    /// True once the crash hook fired.
    @_spi(Fuzzing) public var hasCrashed: Bool { dead }
}
