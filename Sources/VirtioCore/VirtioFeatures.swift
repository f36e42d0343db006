/// Virtio feature bits used by this device (generic and virtio-blk specific).
public enum VirtioFeature {
    public static let blkSizeMax: UInt64 = 1 << 1
    public static let blkSegMax: UInt64 = 1 << 2
    public static let blkGeometry: UInt64 = 1 << 4
    public static let blkReadOnly: UInt64 = 1 << 5
    public static let blkBlockSize: UInt64 = 1 << 6
    public static let blkFlush: UInt64 = 1 << 9
    public static let blkTopology: UInt64 = 1 << 10
    public static let blkConfigWCE: UInt64 = 1 << 11
    public static let blkMultiQueue: UInt64 = 1 << 12
    public static let blkDiscard: UInt64 = 1 << 13
    public static let blkWriteZeroes: UInt64 = 1 << 14
    public static let ringIndirectDesc: UInt64 = 1 << 28
    public static let ringEventIdx: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
    public static let accessPlatform: UInt64 = 1 << 33
    public static let ringPacked: UInt64 = 1 << 34

    /// Human-readable names of the bits set in `features`.
    public static func names(_ features: UInt64) -> [String] {
        let table: [(UInt64, String)] = [
            (blkSizeMax, "SIZE_MAX"), (blkSegMax, "SEG_MAX"), (blkGeometry, "GEOMETRY"),
            (blkReadOnly, "RO"), (blkBlockSize, "BLK_SIZE"), (blkFlush, "FLUSH"),
            (blkTopology, "TOPOLOGY"), (blkConfigWCE, "CONFIG_WCE"), (blkMultiQueue, "MQ"),
            (blkDiscard, "DISCARD"), (blkWriteZeroes, "WRITE_ZEROES"),
            (ringIndirectDesc, "INDIRECT_DESC"), (ringEventIdx, "EVENT_IDX"),
            (version1, "VERSION_1"), (accessPlatform, "ACCESS_PLATFORM"), (ringPacked, "RING_PACKED"),
        ]
        return table.filter { features & $0.0 != 0 }.map(\.1)
    }
}
