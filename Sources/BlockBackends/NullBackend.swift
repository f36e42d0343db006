import SystemSupport
import Glibc

/// A backend that stores nothing: every op completes at once with success
/// (reads and writes report their byte count and leave the buffers
/// untouched; flush, discard and write-zeroes report 0). Out-of-range ops
/// complete with -EIO, as on the memory backend; writes to a read-only null
/// device with -EBADF. For benchmarking everything but the storage.
public struct NullBackendFactory: BlockBackendFactory {
    public let geometry: BackendGeometry

    public var summary: String {
        "null:\(geometry.capacityBytes) bytes" + (geometry.readOnly ? " (ro)" : "")
    }

    /// A device of `capacityBytes` (a positive multiple of 512).
    public init(capacityBytes: UInt64, readOnly: Bool = false) throws(BackendError) {
        guard capacityBytes > 0 && capacityBytes % 512 == 0 else {
            throw .badSize("\(capacityBytes) bytes is not a positive multiple of 512")
        }
        geometry = BackendGeometry(capacityBytes: capacityBytes, readOnly: readOnly,
                                   supportsDiscard: !readOnly, supportsWriteZeroes: !readOnly)
    }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        guard depth > 0 else { throw .invalidSpec("queue depth \(depth) must be positive") }
        return NullQueueBackend(capacityBytes: geometry.capacityBytes, readOnly: geometry.readOnly, depth: depth)
    }
}

/// One queue's handle on the null device: completions are made at prepare
/// time and published by `submit()`.
final class NullQueueBackend: QueueBackend {
    let completionFD: Int32 = -1
    let capacity: Int
    private let capacityBytes: UInt64
    private let readOnly: Bool
    private let completions: CompletionRing

    var inFlight: Int { completions.count }

    init(capacityBytes: UInt64, readOnly: Bool, depth: Int) {
        self.capacityBytes = capacityBytes
        self.readOnly = readOnly
        capacity = depth
        completions = CompletionRing(capacity: depth)
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        completions.push(tag: tag, result: transfer(offset: offset, length: OpRecord.totalBytes(iovecs, count)))
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        let result = readOnly ? -EBADF : transfer(offset: offset, length: OpRecord.totalBytes(iovecs, count))
        completions.push(tag: tag, result: result)
    }

    func prepareFlush(tag: UInt32) {
        completions.push(tag: tag, result: 0)
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        completions.push(tag: tag, result: readOnly ? -EBADF : inRange(offset, length) ? 0 : -EIO)
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        completions.push(tag: tag, result: readOnly ? -EBADF : inRange(offset, length) ? 0 : -EIO)
    }

    func submit() {
        completions.publish()
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        completions.pop(into: buffer)
    }

    @inline(__always)
    private func inRange(_ offset: UInt64, _ length: UInt64) -> Bool {
        offset <= capacityBytes && length <= capacityBytes - offset
    }

    /// The byte count of an in-range transfer, or -EIO.
    @inline(__always)
    private func transfer(offset: UInt64, length: UInt64) -> Int32 {
        length <= UInt64(Int32.max) && inRange(offset, length) ? Int32(length) : -EIO
    }
}
