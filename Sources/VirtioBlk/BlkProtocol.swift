/// virtio-blk request types (virtio 1.x, 5.2.6).
public enum BlkRequestType {
    public static let read: UInt32 = 0
    public static let write: UInt32 = 1
    public static let flush: UInt32 = 4
    public static let getID: UInt32 = 8
    public static let getLifetime: UInt32 = 10
    public static let discard: UInt32 = 11
    public static let writeZeroes: UInt32 = 13
    public static let secureErase: UInt32 = 14
}

/// virtio-blk status byte values.
public enum BlkStatus {
    public static let ok: UInt8 = 0
    public static let ioError: UInt8 = 1
    public static let unsupported: UInt8 = 2
}

/// Sizes fixed by the virtio-blk protocol.
public enum BlkProtocol {
    public static let sectorSize: UInt64 = 512
    public static let headerSize = 16
    /// struct virtio_blk_discard_write_zeroes
    public static let rangeSegmentSize = 16
    public static let serialLength = 20
    public static let rangeFlagUnmap: UInt32 = 1
}
