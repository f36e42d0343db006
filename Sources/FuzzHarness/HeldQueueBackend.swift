import BlockBackends
import Glibc

/// A queue backend for crash fuzzing: owns the ops a worker submitted and
/// keeps each one "in the disk's hands" until the harness releases it, so a
/// simulated SIGKILL can strike with I/O submitted and not reaped (and with
/// some of it executed, some not). Writes land in `HeldDisk` on release;
/// reads fill their buffers from it. Completions are reaped synchronously
/// (completionFD -1).
public final class HeldQueueBackend: QueueBackend {
    struct Op {
        var tag: UInt32
        var offset: UInt64
        /// A write's bytes (copied at prepare, as the kernel would have them).
        var data: [UInt8]?
        /// A read's buffers.
        var readInto: [(UnsafeMutableRawPointer, Int)]
    }

    public let completionFD: Int32 = -1
    let disk: HeldDisk
    var held: [Op] = []
    var done: [IOCompletion] = []

    public let capacity: Int

    init(disk: HeldDisk, depth: Int) {
        self.disk = disk
        capacity = depth
    }

    public var heldCount: Int { held.count }
    public var inFlight: Int { held.count + done.count }

    public func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        var bufs: [(UnsafeMutableRawPointer, Int)] = []
        for i in 0..<count { bufs.append((iovecs[i].iov_base!, iovecs[i].iov_len)) }
        held.append(Op(tag: tag, offset: offset, data: nil, readInto: bufs))
    }

    public func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        var bytes: [UInt8] = []
        for i in 0..<count {
            bytes += UnsafeRawBufferPointer(start: iovecs[i].iov_base, count: iovecs[i].iov_len)
        }
        held.append(Op(tag: tag, offset: offset, data: bytes, readInto: []))
    }

    public func prepareFlush(tag: UInt32) { held.append(Op(tag: tag, offset: 0, data: nil, readInto: [])) }
    public func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        held.append(Op(tag: tag, offset: 0, data: nil, readInto: []))
    }
    public func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        held.append(Op(tag: tag, offset: 0, data: nil, readInto: []))
    }
    public func submit() {}

    /// Executes up to `n` held ops, the `pick(count)`-th each time, and
    /// makes them reapable.
    public func release(_ n: Int, pick: (Int) -> Int) {
        for _ in 0..<min(n, held.count) {
            let i = max(0, min(held.count - 1, pick(held.count)))
            let op = held.remove(at: i)
            var result: Int32 = 0
            if let d = op.data {
                disk.blocks[op.offset] = d
                result = Int32(d.count)
            } else if !op.readInto.isEmpty {
                var at = op.offset
                for (p, len) in op.readInto {
                    let src = disk.blocks[at] ?? []
                    for j in 0..<len { p.storeBytes(of: j < src.count ? src[j] : 0, toByteOffset: j, as: UInt8.self) }
                    at += UInt64(len)
                    result += Int32(len)
                }
            }
            done.append(IOCompletion(tag: op.tag, result: result))
        }
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        let n = min(buffer.count, done.count)
        for i in 0..<n { buffer[i] = done[i] }
        done.removeFirst(n)
        return n
    }
}

/// The disk behind `HeldQueueBackend`: byte offset -> the bytes last written there.
/// It outlives every worker (a daemon crash is not a power loss).
public final class HeldDisk {
    public var blocks: [UInt64: [UInt8]] = [:]
    public init() {}
}
