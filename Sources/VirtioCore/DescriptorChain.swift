import Glibc

/// The buffers of one descriptor chain, translated into this process:
/// device-readable segments first, then device-writable ones. The storage is
/// preallocated by the owner (one per request slot) and reused.
public struct ChainSegments {
    public let storage: UnsafeMutablePointer<iovec>
    public let capacity: Int
    public var count = 0
    /// Index of the first writable segment (`count` when there is none).
    public var writableStart = 0
    public var readableBytes: UInt64 = 0
    public var writableBytes: UInt64 = 0
    /// The last byte of the chain's last descriptor, when that descriptor is
    /// device-writable and mapped: where a status byte goes.
    public var lastWritableByte: UnsafeMutablePointer<UInt8>?
    /// The first problem that spoils this request (non-fatal `QueueError`s only).
    public var error: QueueError?

    public init(storage: UnsafeMutablePointer<iovec>, capacity: Int) {
        self.storage = storage
        self.capacity = capacity
    }

    @inlinable
    public mutating func reset() {
        count = 0
        writableStart = 0
        readableBytes = 0
        writableBytes = 0
        lastWritableByte = nil
        error = nil
    }
}

/// Walks a split-ring descriptor chain from its head, following NEXT and at
/// most one level of INDIRECT, and translates every buffer through guest
/// memory. Rejects loops and over-long chains (at most `queueSize`
/// descriptors), nested indirect tables, out-of-range indices, zero-length or
/// wrapping buffers and unmapped addresses.
public enum DescriptorChainWalker {
    /// Fills `out` for the chain at `head`. Throws only fatal errors (the ring
    /// cannot be trusted); request-level problems land in `out.error`.
    @inlinable
    public static func walk<M: GuestMemory>(
        head: UInt16, table: UnsafeRawPointer, queueSize: UInt16, memory: M,
        indirectAllowed: Bool, into out: inout ChainSegments
    ) throws(QueueError) {
        out.reset()
        var currentTable = table
        var tableSize = Int(queueSize)
        var index = Int(head)
        var inIndirect = false
        var budget = Int(queueSize)
        var last = RawDescriptor(address: 0, length: 0, flags: 0, next: 0)
        var sawWritable = false

        while true {
            guard index < tableSize else {
                throw inIndirect || index != Int(head) ? .nextOutOfRange(UInt16(truncatingIfNeeded: index))
                    : .headOutOfRange(UInt16(truncatingIfNeeded: index))
            }
            let d = RawDescriptor.load(from: currentTable, index: index)
            if d.flags & SplitRingLayout.descFlagIndirect != 0 {
                guard indirectAllowed else { throw .indirectNotNegotiated }
                guard !inIndirect else { throw .nestedIndirect }
                guard d.flags & SplitRingLayout.descFlagNext == 0 else { throw .indirectWithNext }
                let entries = Int(d.length) / 16
                guard d.length > 0, d.length % 16 == 0, entries <= budget,
                      let t = memory.contiguous(d.address, length: UInt64(d.length), write: false)
                else { throw .badIndirectTable(address: d.address, length: d.length) }
                currentTable = UnsafeRawPointer(t)
                tableSize = entries
                index = 0
                inIndirect = true
                continue
            }
            guard budget > 0 else { throw .chainTooLong }
            budget -= 1
            last = d
            let writable = d.flags & SplitRingLayout.descFlagWrite != 0
            if writable {
                if !sawWritable {
                    sawWritable = true
                    out.writableStart = out.count
                }
            } else if sawWritable, out.error == nil {
                out.error = .readableAfterWritable
            }
            if out.error == nil { append(d, writable: writable, memory: memory, into: &out) }
            guard d.flags & SplitRingLayout.descFlagNext != 0 else { break }
            index = Int(d.next)
        }
        if !sawWritable { out.writableStart = out.count }
        if last.flags & SplitRingLayout.descFlagWrite != 0, last.length > 0,
           last.address &+ UInt64(last.length - 1) >= last.address,
           let p = memory.contiguous(last.address &+ UInt64(last.length - 1), length: 1, write: true) {
            out.lastWritableByte = p.assumingMemoryBound(to: UInt8.self)
        }
    }

    @inlinable
    static func append<M: GuestMemory>(_ d: RawDescriptor, writable: Bool, memory: M,
                                       into out: inout ChainSegments) {
        guard d.length > 0 else { out.error = .zeroLengthBuffer; return }
        guard d.address &+ UInt64(d.length - 1) >= d.address else {
            out.error = .bufferWraps(address: d.address, length: d.length)
            return
        }
        var address = d.address
        var remaining = UInt64(d.length)
        while remaining > 0 {
            guard let span = memory.translate(address, length: remaining, write: writable), span.length > 0 else {
                out.error = .bufferUnmapped(address: d.address, length: d.length)
                return
            }
            guard out.count < out.capacity else { out.error = .tooManySegments; return }
            let n = min(span.length, remaining)
            out.storage[out.count] = iovec(iov_base: span.pointer, iov_len: Int(n))
            out.count += 1
            if writable { out.writableBytes &+= n } else { out.readableBytes &+= n }
            address &+= n
            remaining -= n
        }
    }
}
