import SystemSupport
import Glibc

/// One prepared op as the file engines remember it until it completes.
struct OpRecord {
    /// What the op does.
    enum Kind: UInt8 { case read, write, flush, discard, writeZeroes }

    var kind: Kind
    var tag: UInt32
    var offset: UInt64
    /// Bytes to transfer (read/write) or the range's length (discard, write-zeroes).
    var length: UInt64
    var iovecs: UnsafePointer<iovec>?
    var iovecCount: Int
    var unmap: Bool
    /// The fallocate mode an async engine handed the kernel for this op (0: none).
    var fallocMode: Int32 = 0

    static var empty: OpRecord {
        OpRecord(kind: .flush, tag: 0, offset: 0, length: 0, iovecs: nil, iovecCount: 0, unmap: false)
    }

    /// Sum of the iovec lengths.
    @inline(__always)
    static func totalBytes(_ iovecs: UnsafePointer<iovec>, _ count: Int) -> UInt64 {
        var total: UInt64 = 0
        for i in 0..<count { total &+= UInt64(iovecs[i].iov_len) }
        return total
    }
}

/// The most iovecs one preadv/pwritev (or io_uring/aio vectored op) accepts (UIO_MAXIOV).
let maxIovecsPerCall = 1024

/// A fixed table of `OpRecord`s indexed by small integers (used as io_uring
/// user_data and aio iocb numbers), with a free list; allocated once.
final class OpSlots {
    let capacity: Int
    private let records: UnsafeMutablePointer<OpRecord>
    private let free: UnsafeMutablePointer<Int32>
    private var freeCount: Int

    init(capacity: Int) {
        precondition(capacity > 0 && capacity <= Int(Int32.max))
        self.capacity = capacity
        records = .allocate(capacity: capacity)
        records.initialize(repeating: .empty, count: capacity)
        free = .allocate(capacity: capacity)
        for i in 0..<capacity { free[i] = Int32(capacity - 1 - i) }
        freeCount = capacity
    }

    deinit {
        records.deallocate()
        free.deallocate()
    }

    /// Slots currently taken.
    var inUse: Int { capacity - freeCount }

    @inline(__always)
    func acquire(_ record: OpRecord) -> Int {
        precondition(freeCount > 0, "more ops in flight than the queue handle's capacity")
        freeCount -= 1
        let slot = Int(free[freeCount])
        records[slot] = record
        return slot
    }

    @inline(__always)
    func release(_ slot: Int) {
        free[freeCount] = Int32(truncatingIfNeeded: slot)
        freeCount += 1
    }

    @inline(__always)
    subscript(slot: Int) -> OpRecord {
        records[slot]
    }
}
