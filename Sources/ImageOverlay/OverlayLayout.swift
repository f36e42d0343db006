import BlockBackends
import SystemSupport

/// Where everything lives in an overlay file of a given capacity (see
/// docs/zstd-image-format.md): the superblock, two allocation-map slots, the
/// sparse data area that mirrors the guest's byte offsets, and (version 2)
/// the map journal after it. Pure arithmetic; a value.
public struct OverlayLayout: Sendable, Equatable {
    public static let blockSize = 4096
    /// Bytes per sector: the granularity of the allocation map.
    public static let sectorSize: UInt64 = 512
    /// Sectors one 4 KiB map page covers (16 MiB of disk).
    public static let sectorsPerPage: UInt64 = UInt64(blockSize) * 8
    public static let superblockSize = blockSize
    /// Slot header: magic, generation, page count, slot index, table checksum, header checksum.
    public static let slotHeaderSize = 64
    /// Largest disk an overlay maps (a 512 MiB map in memory).
    public static let maxCapacity: UInt64 = 2 << 40

    public let capacity: UInt64
    public let pageCount: Int
    /// Slot header plus page checksum table, rounded up to 4 KiB.
    public let slotHeaderRegion: Int
    public let slotSize: UInt64
    public let slotOffsets: [UInt64]
    public let dataOffset: UInt64
    /// The map journal (version 2): two halves of `journalRecordsPerHalf`
    /// records, after the data area (so a version 1 file gains one in place).
    public let journalOffset: UInt64

    /// Bytes per journal record (128 per 4 KiB page: none straddles a page).
    public static let journalRecordSize = 32
    /// Records per journal half: 64 Ki (2 MiB). A full half forces a map
    /// flush; at one record per write that sets new map bits, that is at
    /// least 256 MiB of fresh 4 KiB writes between forced flushes.
    public static let journalRecordsPerHalf = 1 << 16
    public static var journalHalfSize: UInt64 { UInt64(journalRecordsPerHalf * journalRecordSize) }
    public static var journalSize: UInt64 { 2 * journalHalfSize }

    public init(capacity: UInt64) throws(ImageError) {
        guard capacity > 0, capacity % Self.sectorSize == 0 else {
            throw .unsupported("an overlay needs a capacity that is a positive multiple of 512, not \(capacity)")
        }
        guard capacity <= Self.maxCapacity else {
            throw .unsupported("overlays are limited to \(Self.maxCapacity) bytes, the image has \(capacity)")
        }
        self.capacity = capacity
        let sectors = capacity / Self.sectorSize
        pageCount = Int((sectors + Self.sectorsPerPage - 1) / Self.sectorsPerPage)
        slotHeaderRegion = Self.roundUp(Self.slotHeaderSize + 8 * pageCount, Self.blockSize)
        slotSize = UInt64(slotHeaderRegion + pageCount * Self.blockSize)
        let first = UInt64(Self.superblockSize)
        slotOffsets = [first, first + slotSize]
        dataOffset = UInt64(Self.roundUp(Int(first + 2 * slotSize), 1 << 20))
        journalOffset = dataOffset + UInt64(Self.roundUp(Int(capacity), Self.blockSize))
    }

    /// File offset of map page `page` in slot `slot`.
    public func pageOffset(slot: Int, page: Int) -> UInt64 {
        slotOffsets[slot] + UInt64(slotHeaderRegion) + UInt64(page * Self.blockSize)
    }

    /// File offset of record `index` of journal half `half`.
    public func journalRecordOffset(half: Int, index: Int) -> UInt64 {
        journalOffset + UInt64(half) * Self.journalHalfSize + UInt64(index * Self.journalRecordSize)
    }

    /// Bytes an overlay file of this layout spans (sparse), journal included.
    public var fileSize: UInt64 { journalOffset + Self.journalSize }

    /// Bytes a version 1 overlay (no journal) spans.
    public var version1FileSize: UInt64 { dataOffset + capacity }

    public static func roundUp(_ n: Int, _ to: Int) -> Int { (n + to - 1) / to * to }
}

/// The overlay superblock (first 4 KiB of the file): which base image the
/// overlay belongs to and its layout. Written at creation, and once more when
/// a version 1 overlay is upgraded to version 2. A value.
public struct OverlaySuperblock: Sendable, Equatable {
    public static let magic: [UInt8] = Array("VBZOVL01".utf8)
    /// The version this code writes: 2 adds the map journal. Version 1
    /// overlays still open (and are upgraded in place).
    public static let version: UInt32 = 2
    /// Bytes covered by the checksum (which follows them), per version.
    public static func checkedSize(version: UInt32) -> Int { version == 1 ? 88 : 104 }

    public var layout: OverlayLayout
    public var base: BaseIdentity
    /// The version read from the file (`version` for a new one).
    public var version: UInt32 = OverlaySuperblock.version

    public init(layout: OverlayLayout, base: BaseIdentity, version: UInt32 = OverlaySuperblock.version) {
        self.layout = layout
        self.base = base
        self.version = version
    }

    /// What identifies a base image: its raw size, chunk size and content digest.
    public struct BaseIdentity: Sendable, Equatable, CustomStringConvertible {
        public var logicalSize: UInt64
        public var chunkSize: Int
        public var contentDigest: UInt64

        public init(logicalSize: UInt64, chunkSize: Int, contentDigest: UInt64) {
            self.logicalSize = logicalSize
            self.chunkSize = chunkSize
            self.contentDigest = contentDigest
        }

        public var description: String {
            "\(logicalSize) bytes, chunks of \(chunkSize), digest \(hex64(contentDigest))"
        }
    }

    /// The superblock in its on-disk form (`version` 1 only for tests of upgrades).
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: OverlayLayout.superblockSize)
        w.raw(Self.magic)
        w.u32(version)
        w.u32(UInt32(OverlayLayout.sectorSize))
        w.u64(layout.capacity)
        w.u64(base.logicalSize)
        w.u32(UInt32(base.chunkSize))
        w.u32(0)
        w.u64(base.contentDigest)
        w.u32(UInt32(layout.pageCount))
        w.u32(0)
        w.u64(layout.slotOffsets[0])
        w.u64(layout.slotOffsets[1])
        w.u64(layout.slotSize)
        w.u64(layout.dataOffset)
        if version >= 2 {
            w.u64(layout.journalOffset)
            w.u32(UInt32(OverlayLayout.journalRecordsPerHalf))
            w.u32(UInt32(OverlayLayout.journalRecordSize))
        }
        w.u64(XXH64.hash(w.bytes))
        w.zeros(OverlayLayout.superblockSize - w.bytes.count)
        return w.bytes
    }

    /// Parses a superblock; every layout field must equal what the capacity implies.
    public static func decode(_ bytes: [UInt8], path: String) throws(ImageError) -> OverlaySuperblock {
        guard bytes.count >= checkedSize(version: Self.version) + 8 else {
            throw .overlayCorrupt("\(path): superblock truncated")
        }
        var r = ByteReader(bytes)
        let magic = r.take(8)!
        guard magic == Self.magic else {
            throw .overlayCorrupt("\(path) is not an overlay (bad superblock magic)")
        }
        // Where the checksum is depends on the version (checked next).
        var peek = ByteReader(bytes, offset: 8)
        let checked = checkedSize(version: peek.u32()!)
        var tail = ByteReader(bytes, offset: checked)
        let stored = tail.u64()!
        let computed = XXH64.hash(Array(bytes[0..<checked]))
        guard stored == computed else {
            throw .checksumMismatch(what: "overlay superblock of \(path)", expected: stored, actual: computed)
        }
        let version = r.u32()!, sector = r.u32()!, capacity = r.u64()!
        let baseSize = r.u64()!, chunk = r.u32()!
        _ = r.u32()
        let digest = r.u64()!, pages = r.u32()!
        _ = r.u32()
        let slot0 = r.u64()!, slot1 = r.u64()!, slotSize = r.u64()!, data = r.u64()!
        guard version == 1 || version == Self.version, UInt64(sector) == OverlayLayout.sectorSize else {
            throw .unsupported("\(path): overlay version \(version) with \(sector)-byte sectors")
        }
        let layout = try OverlayLayout(capacity: capacity)
        guard Int(pages) == layout.pageCount, slot0 == layout.slotOffsets[0], slot1 == layout.slotOffsets[1],
              slotSize == layout.slotSize, data == layout.dataOffset else {
            throw .overlayCorrupt("\(path): superblock layout does not match its capacity \(capacity)")
        }
        if version >= 2 {
            let journal = r.u64()!, records = r.u32()!, recordSize = r.u32()!
            guard journal == layout.journalOffset, Int(records) == OverlayLayout.journalRecordsPerHalf,
                  Int(recordSize) == OverlayLayout.journalRecordSize else {
                throw .overlayCorrupt("\(path): superblock journal does not match its capacity \(capacity)")
            }
        }
        return OverlaySuperblock(layout: layout, base: BaseIdentity(logicalSize: baseSize, chunkSize: Int(chunk),
                                                                    contentDigest: digest), version: version)
    }
}
