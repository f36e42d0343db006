import BlockBackends
import Glibc
import SystemSupport

/// What an image backend plugs into `OverlaidQueueBackend`: where base bytes
/// come from. One instance per queue, used only by that queue's thread.
/// The zstd backend decompresses chunks; the remote backend copies local
/// chunks and asks for missing ones (then parks the read).
public protocol OverlaidBaseReader: AnyObject {
    /// Copies base bytes `[start, end)` into `cursor`: 0, a negated errno, or
    /// -EAGAIN when some bytes are not available yet (the core then parks the
    /// read and retries it after `wakeFD` fires). A reader that never returns
    /// -EAGAIN never parks.
    func readBase(from start: UInt64, to end: UInt64, into cursor: inout IovecCursor) -> Int32

    /// Called once per guest read before it is served (sequential detection,
    /// readahead).
    func willRead(offset: UInt64, end: UInt64)

    /// An eventfd that becomes readable when parked reads may proceed (the
    /// queue's `completionFD`), or -1 for a reader that never parks.
    var wakeFD: Int32 { get }

    /// True (once per burst) when a wake-up arrived since the last call.
    func takeWake() -> Bool

    /// The read that just returned -EAGAIN is about to park: what to remember
    /// about it, or nil to fail it now with EIO (nothing will ever wake it).
    func parkTicket() -> ParkTicket?

    /// A parked read's retry returned -EAGAIN again: false gives up (EIO).
    /// May update the ticket (the chunk now missing).
    func keepWaiting(_ ticket: inout ParkTicket) -> Bool

    /// After `keepWaiting`: true when what the ticket waits for is still
    /// being produced (the wake-up was for another read), so this retry does
    /// not count against the retry limit (the deadline still applies).
    func awaitsPendingWork(_ ticket: ParkTicket) -> Bool
}

extension OverlaidBaseReader {
    public func willRead(offset: UInt64, end: UInt64) {}
    public var wakeFD: Int32 { -1 }
    public func takeWake() -> Bool { false }
    public func parkTicket() -> ParkTicket? { nil }
    public func keepWaiting(_ ticket: inout ParkTicket) -> Bool { false }
    public func awaitsPendingWork(_ ticket: ParkTicket) -> Bool { false }
}

/// What a parked read waits for, in the base reader's own terms.
public struct ParkTicket: Sendable {
    /// The unit (chunk) whose arrival the read waits for.
    public var unit: Int
    /// The reader's failure counter when the read parked.
    public var serial: UInt64

    public init(unit: Int, serial: UInt64) {
        self.unit = unit
        self.serial = serial
    }
}

/// The one queue backend of every image backend with an optional writable
/// overlay (zstd, remote): range checks, overlay/base merging on reads,
/// writes, discards and write-zeroes into the overlay, FLUSH of the overlay's
/// map, and parking of reads whose base bytes are not local yet. The image
/// backends differ only in their `Base` reader. Synchronous: every op runs
/// when prepared, on the queue thread, and completes at `submit()` (or, when
/// parked, once a retry after a wake-up succeeds). Owns its completion ring,
/// parked-op table and scratch iovecs; allocates nothing per op.
public final class OverlaidQueueBackend<Base: OverlaidBaseReader>: QueueBackend {
    public let capacity: Int
    public var completionFD: Int32 { base.wakeFD }
    public var inFlight: Int { completions.count + parkedCount }

    /// The per-queue base reader.
    public let base: Base
    private let overlay: Overlay?
    private let capacityBytes: UInt64
    private let completions: CompletionRing
    private let scratch: UnsafeMutablePointer<iovec>
    private static var scratchCount: Int { 256 }

    private struct ParkedRead {
        var tag: UInt32
        var offset: UInt64
        var total: UInt64
        var iovecs: UnsafePointer<iovec>
        var count: Int
        var ticket: ParkTicket
        var deadline: Double
        var attempts: Int
    }
    private let parked: UnsafeMutablePointer<ParkedRead>
    private var parkedCount = 0
    private let parkTimeout: Double
    /// Retries of one parked read before it fails (each retry follows a
    /// wake-up; retries while its work is still pending do not count).
    private static var maxRetries: Int { 64 }

    /// - Parameters:
    ///   - overlay: takes writes, discards and write-zeroes; nil serves the
    ///     image read-only (those then complete with -EBADF, as on a read-only file or memory backend).
    ///   - parkTimeout: seconds a parked read may wait before it fails.
    public init(base: Base, overlay: Overlay?, capacityBytes: UInt64, depth: Int, parkTimeout: Double = 0) {
        self.base = base
        self.overlay = overlay
        self.capacityBytes = capacityBytes
        self.parkTimeout = parkTimeout
        capacity = depth
        completions = CompletionRing(capacity: depth)
        scratch = .allocate(capacity: Self.scratchCount)
        parked = .allocate(capacity: depth)
    }

    deinit {
        scratch.deallocate()
        parked.deallocate()
    }

    // MARK: QueueBackend

    public func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        guard let total = checkedLength(offset, iovecs, count) else { return completions.push(tag: tag, result: -EIO) }
        base.willRead(offset: offset, end: offset + total)
        let rc = read(offset: offset, total: total, iovecs: iovecs, count: count)
        guard rc == -EAGAIN else { return completions.push(tag: tag, result: rc) }
        guard let ticket = base.parkTicket() else { return completions.push(tag: tag, result: -EIO) }
        precondition(parkedCount < capacity, "more ops parked than the queue's depth")
        parked[parkedCount] = ParkedRead(tag: tag, offset: offset, total: total, iovecs: iovecs, count: count,
                                         ticket: ticket, deadline: monotonicSeconds() + parkTimeout, attempts: 0)
        parkedCount += 1
    }

    public func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        guard let overlay else { return completions.push(tag: tag, result: -EBADF) }
        guard let total = checkedLength(offset, iovecs, count) else { return completions.push(tag: tag, result: -EIO) }
        completions.push(tag: tag, result: overlay.write(offset: offset, total: total, iovecs: iovecs, count: count,
                                                         scratch: scratch, scratchCount: Self.scratchCount))
    }

    public func prepareFlush(tag: UInt32) {
        completions.push(tag: tag, result: overlay?.flush() ?? 0)
    }

    public func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length))
    }

    public func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length))
    }

    public func submit() {
        completions.publish()
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        if parkedCount > 0, base.takeWake() {
            retryParked()
            completions.publish()
        }
        return completions.pop(into: buffer)
    }

    // MARK: the operations

    /// The byte length of `iovecs` if `[offset, offset + length)` lies inside the image.
    @inline(__always)
    private func checkedLength(_ offset: UInt64, _ iovecs: UnsafePointer<iovec>, _ count: Int) -> UInt64? {
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        guard total <= UInt64(Int32.max), inRange(offset, total) else { return nil }
        return total
    }

    @inline(__always)
    private func inRange(_ offset: UInt64, _ length: UInt64) -> Bool {
        offset <= capacityBytes && length <= capacityBytes - offset
    }

    /// Bytes read, a negated errno, or -EAGAIN (base bytes missing).
    private func read(offset: UInt64, total: UInt64, iovecs: UnsafePointer<iovec>, count: Int) -> Int32 {
        var cursor = IovecCursor(iovecs, count: count)
        let rc: Int32
        if let overlay {
            rc = overlay.readMerged(offset: offset, total: total, cursor: &cursor, scratch: scratch,
                                    scratchCount: Self.scratchCount) { from, to, c in base.readBase(from: from, to: to, into: &c) }
        } else {
            rc = base.readBase(from: offset, to: offset + total, into: &cursor)
        }
        return rc < 0 ? rc : Int32(total)
    }

    private func zero(offset: UInt64, length: UInt64) -> Int32 {
        guard let overlay else { return -EBADF }
        guard inRange(offset, length) else { return -EIO }
        return overlay.zero(offset: offset, length: length)
    }

    /// Retries every parked read; those still missing stay parked, those the
    /// reader gives up on (or past the deadline or retry limit) complete with EIO.
    private func retryParked() {
        var i = 0
        let now = monotonicSeconds()
        while i < parkedCount {
            var op = parked[i]
            var rc = read(offset: op.offset, total: op.total, iovecs: op.iovecs, count: op.count)
            if rc == -EAGAIN {
                if base.keepWaiting(&op.ticket), now <= op.deadline, op.attempts < Self.maxRetries {
                    if !base.awaitsPendingWork(op.ticket) { op.attempts += 1 }
                    parked[i] = op
                    i += 1
                    continue
                }
                rc = -EIO
            }
            completions.push(tag: op.tag, result: rc)
            parkedCount -= 1
            parked[i] = parked[parkedCount]
        }
    }
}
