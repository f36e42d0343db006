import SystemSupport
import Glibc

/// The bytes of an in-RAM image: one anonymous mapping (pages appear on
/// first touch, so a large sparse image costs only what is written), shared
/// by every queue of a `MemoryBackendFactory`. Queues write it concurrently
/// without locks, like a disk serving overlapping requests: whatever order
/// overlapping ops land in is the guest's business. Hence `@unchecked Sendable`.
final class MemoryImage: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(size: UInt64) throws(BackendError) {
        guard size <= UInt64(Int.max) else { throw .badSize("\(size) bytes does not fit in memory") }
        let mapped = mmap(nil, Int(size), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw .io(what: "mapping a \(size)-byte memory image", errno: errno)
        }
        base = mapped
        self.size = Int(size)
    }

    deinit {
        munmap(base, size)
    }

    /// Whether [offset, offset + length) lies inside the image.
    @inline(__always)
    func contains(offset: UInt64, length: UInt64) -> Bool {
        offset <= UInt64(size) && length <= UInt64(size) - offset
    }

    /// Zeroes a range; with `release`, whole pages inside it are handed back
    /// to the kernel (they read as zeroes afterwards) instead of being cleared.
    func zero(offset: Int, length: Int, release: Bool) {
        let page = 4096
        if release && length >= page {
            let start = (offset + page - 1) & ~(page - 1)
            let end = (offset + length) & ~(page - 1)
            if start < end && madvise(base + start, end - start, MADV_DONTNEED) == 0 {
                memset(base + offset, 0, start - offset)
                memset(base + end, 0, offset + length - end)
                return
            }
        }
        memset(base + offset, 0, length)
    }
}

/// An image held in RAM: every queue works synchronously on one shared
/// buffer (completions are ready right after `submit()`, `completionFD == -1`).
/// Discard and write-zeroes zero the range. Out-of-range ops complete with
/// -EIO; writes to a read-only image with -EBADF. For tests and benchmarks.
public struct MemoryBackendFactory: BlockBackendFactory {
    public let geometry: BackendGeometry
    private let image: MemoryImage

    public var summary: String {
        "memory:\(geometry.capacityBytes) bytes" + (geometry.readOnly ? " (ro)" : "")
    }

    /// An all-zero image of `capacityBytes` (a positive multiple of 512).
    public init(capacityBytes: UInt64, readOnly: Bool = false) throws(BackendError) {
        guard capacityBytes > 0 && capacityBytes % 512 == 0 else {
            throw .badSize("\(capacityBytes) bytes is not a positive multiple of 512")
        }
        image = try MemoryImage(size: capacityBytes)
        geometry = BackendGeometry(capacityBytes: capacityBytes, readOnly: readOnly,
                                   supportsDiscard: !readOnly, supportsWriteZeroes: !readOnly)
    }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        guard depth > 0 else { throw .invalidSpec("queue depth \(depth) must be positive") }
        return MemoryQueueBackend(image: image, readOnly: geometry.readOnly, depth: depth)
    }

    /// A copy of `count` bytes of the image at `offset` (for checking what queues wrote).
    public func bytes(at offset: UInt64, count: Int) -> [UInt8] {
        precondition(count >= 0 && image.contains(offset: offset, length: UInt64(count)), "range outside the image")
        return Array(UnsafeRawBufferPointer(start: image.base + Int(offset), count: count))
    }

    /// Stores `bytes` into the image at `offset`, bypassing the queues (for seeding tests).
    public func store(_ bytes: [UInt8], at offset: UInt64) {
        precondition(image.contains(offset: offset, length: UInt64(bytes.count)), "range outside the image")
        bytes.withUnsafeBytes { source in
            guard let from = source.baseAddress else { return }
            (image.base + Int(offset)).copyMemory(from: from, byteCount: source.count)
        }
    }
}

/// One queue's handle on a `MemoryImage`: ops run at prepare time, their
/// completions are published by `submit()`.
final class MemoryQueueBackend: QueueBackend {
    let completionFD: Int32 = -1
    let capacity: Int
    private let image: MemoryImage
    private let readOnly: Bool
    private let completions: CompletionRing

    var inFlight: Int { completions.count }

    init(image: MemoryImage, readOnly: Bool, depth: Int) {
        self.image = image
        self.readOnly = readOnly
        capacity = depth
        completions = CompletionRing(capacity: depth)
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        completions.push(tag: tag, result: transfer(write: false, offset: offset, iovecs: iovecs, count: count))
    }

    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        let result = readOnly ? -EBADF : transfer(write: true, offset: offset, iovecs: iovecs, count: count)
        completions.push(tag: tag, result: result)
    }

    func prepareFlush(tag: UInt32) {
        completions.push(tag: tag, result: 0)
    }

    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length, release: true))
    }

    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        completions.push(tag: tag, result: zero(offset: offset, length: length, release: unmap))
    }

    func submit() {
        completions.publish()
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        completions.pop(into: buffer)
    }

    @inline(__always)
    private func transfer(write: Bool, offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int) -> Int32 {
        let total = OpRecord.totalBytes(iovecs, count)
        guard total <= UInt64(Int32.max), image.contains(offset: offset, length: total) else { return -EIO }
        var position = image.base + Int(offset)
        for i in 0..<count {
            let length = iovecs[i].iov_len
            guard length > 0, let buffer = iovecs[i].iov_base else { continue }
            if write {
                position.copyMemory(from: buffer, byteCount: length)
            } else {
                buffer.copyMemory(from: position, byteCount: length)
            }
            position += length
        }
        return Int32(total)
    }

    @inline(__always)
    private func zero(offset: UInt64, length: UInt64, release: Bool) -> Int32 {
        if readOnly { return -EBADF }
        guard image.contains(offset: offset, length: length) else { return -EIO }
        image.zero(offset: Int(offset), length: Int(length), release: release)
        return 0
    }
}
