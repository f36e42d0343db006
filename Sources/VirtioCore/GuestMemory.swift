/// A contiguous piece of guest memory mapped into this process.
public struct GuestSpan {
    public var pointer: UnsafeMutableRawPointer
    /// Bytes reachable from `pointer` without leaving the mapping.
    public var length: UInt64

    @inlinable
    public init(pointer: UnsafeMutableRawPointer, length: UInt64) {
        self.pointer = pointer
        self.length = length
    }
}

/// Translates device addresses (IOVAs the driver wrote into rings and
/// descriptors) into pointers in this process. Implementations own the
/// mappings (VDUSE IOTLB regions, or plain memory in the simulated driver).
/// One instance is used by exactly one queue thread, so it needs no lock.
public protocol GuestMemory: AnyObject {
    /// The mapping that contains `address`, clipped to at most `length` bytes
    /// starting there; nil if `address` is unmapped or lacks the access asked for.
    func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan?
}

extension GuestMemory {
    /// A pointer to `length` bytes at `address` that are contiguous in this
    /// process, or nil if they are not (unmapped, or split across mappings).
    @inlinable
    public func contiguous(_ address: UInt64, length: UInt64, write: Bool) -> UnsafeMutableRawPointer? {
        guard length > 0, address &+ (length - 1) >= address,
              let span = translate(address, length: length, write: write),
              span.length >= length else { return nil }
        return span.pointer
    }
}
