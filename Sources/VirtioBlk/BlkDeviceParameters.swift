import VirtioCore

/// Everything the driver is told about the disk: geometry, limits and the
/// feature set offered. Owns the encoding of the config space.
public struct BlkDeviceParameters: Sendable, Equatable {
    public var capacityBytes: UInt64
    /// Logical block size reported in blk_size (512 or 4096).
    public var blockSize: UInt32
    public var readOnly: Bool
    /// Up to 20 bytes returned by GET_ID.
    public var serial: [UInt8]
    public var numQueues: UInt16
    public var queueSize: UInt16
    /// Largest number of data segments in one request (seg_max).
    public var segMax: UInt32
    /// Largest segment in bytes (size_max).
    public var sizeMax: UInt32
    public var discard: Bool
    public var writeZeroes: Bool
    public var maxDiscardSectors: UInt32
    public var maxWriteZeroesSectors: UInt32
    /// Byte alignment the backend needs for data requests (>= 512).
    public var requiredAlignment: UInt32
    /// When set, the capacity the device serves now (online resize) instead
    /// of `capacityBytes`: shared by every copy of these parameters.
    public var liveCapacity: LiveCapacity?

    public init(capacityBytes: UInt64, blockSize: UInt32 = 512, readOnly: Bool = false,
                serial: String = "", numQueues: UInt16 = 1, queueSize: UInt16 = 256,
                discard: Bool = true, writeZeroes: Bool = true, requiredAlignment: UInt32 = 512) {
        self.capacityBytes = capacityBytes
        self.blockSize = blockSize
        self.readOnly = readOnly
        self.serial = Array(serial.utf8.prefix(BlkProtocol.serialLength))
        self.numQueues = numQueues
        self.queueSize = queueSize
        self.segMax = UInt32(max(1, min(Int(queueSize) - 2, 254)))
        self.sizeMax = 1 << 20
        self.discard = discard && !readOnly
        self.writeZeroes = writeZeroes && !readOnly
        self.maxDiscardSectors = UInt32(1 << 22)      // 2 GiB per request
        self.maxWriteZeroesSectors = UInt32(1 << 22)
        self.requiredAlignment = max(requiredAlignment, 512)
    }

    /// The capacity served now: `liveCapacity` when set, else `capacityBytes`.
    public var currentCapacityBytes: UInt64 { liveCapacity?.currentBytes ?? capacityBytes }

    public var capacitySectors: UInt64 { currentCapacityBytes / BlkProtocol.sectorSize }

    /// The features this device offers.
    public var offeredFeatures: UInt64 {
        var f: UInt64 = VirtioFeature.version1 | VirtioFeature.accessPlatform
            | VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx
            | VirtioFeature.blkSizeMax | VirtioFeature.blkSegMax | VirtioFeature.blkBlockSize
            | VirtioFeature.blkTopology | VirtioFeature.blkFlush | VirtioFeature.blkMultiQueue
        if discard { f |= VirtioFeature.blkDiscard }
        if writeZeroes { f |= VirtioFeature.blkWriteZeroes }
        if readOnly { f |= VirtioFeature.blkReadOnly }
        return f
    }

    /// struct virtio_blk_config up to write_zeroes_may_unmap and its padding (60 bytes).
    public func configSpace() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ v: T, _ off: Int) {
            withUnsafeBytes(of: v.littleEndian) { src in
                for i in 0..<src.count { b[off + i] = src[i] }
            }
        }
        put(capacitySectors, 0)
        put(sizeMax, 8)
        put(segMax, 12)
        // geometry (16..19) left zero: GEOMETRY is not offered
        put(blockSize, 20)
        // topology: physical_block_exp, alignment_offset, min_io_size (in blocks), opt_io_size
        b[24] = 0
        b[25] = 0
        put(UInt16(1), 26)
        put(UInt32(0), 28)
        b[32] = 0               // writeback: CONFIG_WCE is not offered
        put(numQueues, 34)
        let blocksPerSector = UInt32(blockSize / 512)
        put(maxDiscardSectors, 36)
        put(UInt32(1), 40)      // max_discard_seg
        put(blocksPerSector, 44) // discard_sector_alignment (sectors)
        put(maxWriteZeroesSectors, 48)
        put(UInt32(1), 52)      // max_write_zeroes_seg
        b[56] = 1               // write_zeroes_may_unmap
        return b
    }
}
