import SystemSupport
import Glibc

/// One finished backend operation: the tag given at submit time and the
/// result, bytes transferred (>= 0) or a negated errno.
public struct IOCompletion: Sendable, Equatable {
    public var tag: UInt32
    public var result: Int32
    public init(tag: UInt32, result: Int32) {
        self.tag = tag
        self.result = result
    }
}

/// Static facts about an opened image, shared by every queue of a device.
public struct BackendGeometry: Sendable, Equatable {
    /// Size of the image in bytes (a multiple of 512).
    public var capacityBytes: UInt64
    /// Writes, discards and write-zeroes must be refused.
    public var readOnly: Bool
    /// DISCARD can be honoured (hole punch or equivalent).
    public var supportsDiscard: Bool
    /// WRITE_ZEROES can be honoured.
    public var supportsWriteZeroes: Bool
    /// Requests must be aligned to this many bytes (512, or 4096 with O_DIRECT on 4K media).
    public var requiredAlignment: UInt32

    public init(capacityBytes: UInt64, readOnly: Bool, supportsDiscard: Bool,
                supportsWriteZeroes: Bool, requiredAlignment: UInt32 = 512) {
        self.capacityBytes = capacityBytes
        self.readOnly = readOnly
        self.supportsDiscard = supportsDiscard
        self.supportsWriteZeroes = supportsWriteZeroes
        self.requiredAlignment = requiredAlignment
    }
}

/// One queue's private handle on a backend. Owned by exactly one queue thread,
/// never shared. Operations are prepared, then pushed with one `submit()`,
/// and their completions collected with `reap(into:)`. Buffers passed in
/// (`iovecs` and the memory they point to) stay valid until the op's completion
/// has been reaped.
public protocol QueueBackend: AnyObject {
    /// An fd that becomes readable when completions are waiting (an eventfd the
    /// queue thread polls), or -1 when every completion is available right after
    /// `submit()` returns (synchronous engines).
    var completionFD: Int32 { get }
    /// Ops prepared or submitted whose completion has not been reaped yet.
    var inFlight: Int { get }
    /// The most ops this handle accepts in flight at once.
    var capacity: Int { get }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32)
    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32)
    func prepareFlush(tag: UInt32)
    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32)
    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32)
    /// Pushes everything prepared since the last call (one syscall for async engines).
    func submit()
    /// Copies up to `buffer.count` finished ops into `buffer` without blocking;
    /// returns how many. Does not touch `completionFD`: the queue thread drains
    /// that eventfd itself when poll reports it readable, before reaping, so a
    /// pass that finds nothing to reap costs no syscall.
    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int
}

/// Opens per-queue handles on one image. Shared (read-only) by the device.
public protocol BlockBackendFactory: Sendable {
    var geometry: BackendGeometry { get }
    /// A short human description ("file:/path (uring)").
    var summary: String { get }
    /// A fresh handle for queue `queueIndex`, accepting `depth` ops in flight.
    func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend
    /// Things worth logging once, after opening (a recovered overlay, what a
    /// remote object turned out to be). Default: none.
    var notes: [Note] { get }
    /// Counters worth showing (`vduse-blk stats NAME`) as name/value pairs in
    /// a stable order, readable from any thread; nil when the backend keeps
    /// none (the default).
    func statistics() -> [(String, UInt64)]?
    /// Starts background work that would only compete with bringing the
    /// device up (prefetching ahead of the guest): called once, when the
    /// device serves (after the attach, if any). Default: none.
    func startBackgroundWork()
    /// Stops background work (fetchers, prefetchers) once no queue handle is
    /// in use any more. Default: nothing to stop.
    func shutdown()
    /// Changes the image's size while its queues run (online resize) and
    /// returns the bytes now usable: grows always, shrinks only when
    /// `allowShrink` (else `.wouldShrink`). Called on the control path,
    /// never concurrently with itself. Default: refuses (`.unsupported`).
    func resize(to bytes: UInt64, allowShrink: Bool) throws(BackendError) -> UInt64
}

/// A message a backend wants logged once, with its weight.
public struct Note: Sendable, Equatable {
    public enum Level: Sendable { case info, warning }
    public var level: Level
    public var text: String
    public init(_ level: Level, _ text: String) {
        self.level = level
        self.text = text
    }
}

extension BlockBackendFactory {
    public var notes: [Note] { [] }
    public func statistics() -> [(String, UInt64)]? { nil }
    public func startBackgroundWork() {}
    public func shutdown() {}
    public func resize(to bytes: UInt64, allowShrink: Bool) throws(BackendError) -> UInt64 {
        throw BackendError(kind: .unsupported, context: "\(summary) cannot be resized (only file: backends can, for now)")
    }
}

/// A backend whose own completion ring can also watch eventfds (the queue's
/// kick and wake fds), so the queue thread submits new I/O and sleeps in one
/// syscall instead of poll + read + submit. Event slots are 0 and 1.
public protocol EventWaitingBackend: QueueBackend {
    /// Watches eventfd `fd` as event `slot`: once it is readable its counter is
    /// consumed in the ring and the slot shows up in `takeFiredEvents()`. A slot
    /// still armed is left alone. Takes effect at the next submit.
    func armEvent(_ slot: Int, fd: Int32)
    /// Cancels every armed event (before another thread or fd takes over).
    func disarmEvents()
    /// Pushes everything prepared and sleeps until a completion or an event is ready.
    func submitAndWait()
    /// Events that fired (bit per slot) since the last call; those slots are now disarmed.
    func takeFiredEvents() -> UInt32
}
