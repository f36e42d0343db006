/// Byte layout of a split virtqueue (virtio 1.x, 2.7): descriptor table,
/// available ring (driver area) and used ring (device area).
public enum SplitRingLayout {
    public static let descriptorSize: UInt64 = 16
    public static let usedElementSize: UInt64 = 8

    public static let descFlagNext: UInt16 = 1
    public static let descFlagWrite: UInt16 = 2
    public static let descFlagIndirect: UInt16 = 4

    /// avail.flags bit: the driver asks for no interrupts (without EVENT_IDX).
    public static let availFlagNoInterrupt: UInt16 = 1
    /// used.flags bit: the device asks for no kicks (without EVENT_IDX).
    public static let usedFlagNoNotify: UInt16 = 1

    public static func descTableBytes(_ size: UInt16) -> UInt64 { UInt64(size) * descriptorSize }
    /// flags, idx, ring[size], used_event
    public static func availBytes(_ size: UInt16) -> UInt64 { 4 + 2 * UInt64(size) + 2 }
    /// flags, idx, ring[size] of (id, len), avail_event
    public static func usedBytes(_ size: UInt16) -> UInt64 { 4 + usedElementSize * UInt64(size) + 2 }

    /// The virtio event-index test: should a notification be sent when the
    /// index moves from `old` to `new` and the other side asked at `event`?
    @inlinable
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }
}

/// One descriptor as the driver wrote it (little-endian in memory).
public struct RawDescriptor: Equatable {
    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16

    @inlinable
    public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }

    @inlinable
    static func load(from table: UnsafeRawPointer, index: Int) -> RawDescriptor {
        let p = table + index &* 16
        return RawDescriptor(
            address: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
            length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
            flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
            next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }
}
