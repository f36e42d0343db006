/// Where everything lives in an overlay file of a given capacity (see
/// docs/zstd-image-format.md): the superblock, two allocation-map slots, and
/// the sparse data area that mirrors the guest's byte offsets. Pure
/// arithmetic; a value.
struct OverlayLayout: Sendable, Equatable {
    static let blockSize = 4096
    /// Bytes per sector: the granularity of the allocation map.
    static let sectorSize: UInt64 = 512
    /// Sectors one 4 KiB map page covers (16 MiB of disk).
    static let sectorsPerPage: UInt64 = UInt64(blockSize) * 8
    static let superblockSize = blockSize
    /// Slot header: magic, generation, page count, slot index, table checksum, header checksum.
    static let slotHeaderSize = 64
    /// Largest disk an overlay maps (a 512 MiB map in memory).
    static let maxCapacity: UInt64 = 2 << 40

    let capacity: UInt64
    let pageCount: Int
    /// Slot header plus page checksum table, rounded up to 4 KiB.
    let slotHeaderRegion: Int
    let slotSize: UInt64
    let slotOffsets: [UInt64]
    let dataOffset: UInt64

    init(capacity: UInt64) throws(ZstdImageError) {
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
    }

    /// File offset of map page `page` in slot `slot`.
    func pageOffset(slot: Int, page: Int) -> UInt64 {
        slotOffsets[slot] + UInt64(slotHeaderRegion) + UInt64(page * Self.blockSize)
    }

    /// Bytes an overlay file of this layout spans (sparse).
    var fileSize: UInt64 { dataOffset + capacity }

    static func roundUp(_ n: Int, _ to: Int) -> Int { (n + to - 1) / to * to }
}

/// The overlay superblock (first 4 KiB of the file): which base image the
/// overlay belongs to and its layout. Written once, at creation. A value.
struct OverlaySuperblock: Sendable, Equatable {
    static let magic: [UInt8] = Array("VBZOVL01".utf8)
    static let version: UInt32 = 1
    /// Bytes covered by the checksum (which follows them).
    static let checkedSize = 88

    var layout: OverlayLayout
    var base: BaseIdentity

    /// What identifies a base image: its raw size, chunk size and content digest.
    struct BaseIdentity: Sendable, Equatable, CustomStringConvertible {
        var logicalSize: UInt64
        var chunkSize: Int
        var contentDigest: UInt64

        init(logicalSize: UInt64, chunkSize: Int, contentDigest: UInt64) {
            self.logicalSize = logicalSize
            self.chunkSize = chunkSize
            self.contentDigest = contentDigest
        }

        init(_ image: SeekableImage) {
            self.init(logicalSize: image.logicalSize, chunkSize: image.chunkSize,
                      contentDigest: image.header.contentDigest)
        }

        var description: String {
            "\(logicalSize) bytes, chunks of \(chunkSize), digest \(hex64(contentDigest))"
        }
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: OverlayLayout.superblockSize)
        w.raw(Self.magic)
        w.u32(Self.version)
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
        w.u64(XXH64.hash(w.bytes))
        w.zeros(OverlayLayout.superblockSize - w.bytes.count)
        return w.bytes
    }

    /// Parses a superblock; every layout field must equal what the capacity implies.
    static func decode(_ bytes: [UInt8], path: String) throws(ZstdImageError) -> OverlaySuperblock {
        guard bytes.count >= checkedSize + 8 else { throw .overlayCorrupt("\(path): superblock truncated") }
        var r = ByteReader(bytes)
        let magic = r.take(8)!
        guard magic == Self.magic else {
            throw .overlayCorrupt("\(path) is not an overlay (bad superblock magic)")
        }
        var tail = ByteReader(bytes, offset: checkedSize)
        let stored = tail.u64()!
        let computed = XXH64.hash(Array(bytes[0..<checkedSize]))
        guard stored == computed else {
            throw .checksumMismatch(what: "overlay superblock of \(path)", expected: stored, actual: computed)
        }
        let version = r.u32()!, sector = r.u32()!, capacity = r.u64()!
        let baseSize = r.u64()!, chunk = r.u32()!
        _ = r.u32()
        let digest = r.u64()!, pages = r.u32()!
        _ = r.u32()
        let slot0 = r.u64()!, slot1 = r.u64()!, slotSize = r.u64()!, data = r.u64()!
        guard version == Self.version, UInt64(sector) == OverlayLayout.sectorSize else {
            throw .unsupported("\(path): overlay version \(version) with \(sector)-byte sectors")
        }
        let layout = try OverlayLayout(capacity: capacity)
        guard Int(pages) == layout.pageCount, slot0 == layout.slotOffsets[0], slot1 == layout.slotOffsets[1],
              slotSize == layout.slotSize, data == layout.dataOffset else {
            throw .overlayCorrupt("\(path): superblock layout does not match its capacity \(capacity)")
        }
        return OverlaySuperblock(layout: layout, base: BaseIdentity(logicalSize: baseSize, chunkSize: Int(chunk),
                                                                    contentDigest: digest))
    }
}
