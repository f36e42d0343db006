import BlockBackends
import SystemSupport
import Synchronization

/// The overlay's allocation map in memory: one bit per 512-byte sector, set
/// once the overlay holds that sector (bits are never cleared). Shared by
/// every queue without locks: bits are atomic words, set after the data they
/// cover has been written, so a reader that sees a bit also sees the data.
/// Also tracks, per 4 KiB map page and per on-disk slot, whether the page
/// changed since that slot was last written. Owns its memory.
public final class OverlayMap: @unchecked Sendable {
    public static let wordsPerPage = OverlayLayout.blockSize / 8
    public let sectorCount: UInt64
    public let pageCount: Int
    private let wordCount: Int
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// Bit s: the page changed since slot s was written.
    private let dirty: UnsafeMutablePointer<Atomic<UInt8>>
    /// Some bit changed since the last map write.
    public let changed = Atomic<Bool>(false)

    public init(sectorCount: UInt64, pageCount: Int) {
        self.sectorCount = sectorCount
        self.pageCount = pageCount
        wordCount = pageCount * Self.wordsPerPage
        words = .allocate(capacity: wordCount)
        for i in 0..<wordCount { (words + i).initialize(to: Atomic(0)) }
        dirty = .allocate(capacity: pageCount)
        for i in 0..<pageCount { (dirty + i).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: wordCount)
        words.deallocate()
        dirty.deinitialize(count: pageCount)
        dirty.deallocate()
    }

    @inline(__always)
    public func isSet(_ sector: UInt64) -> Bool {
        words[Int(sector >> 6)].load(ordering: .acquiring) >> (sector & 63) & 1 != 0
    }

    /// From `sector`: whether it is allocated, and how many sectors (at most
    /// `limit`, at least 1) in a row share that state.
    @inline(__always)
    public func run(from sector: UInt64, limit: UInt64) -> (allocated: Bool, length: UInt64) {
        var w = Int(sector >> 6)
        let bit = sector & 63
        let value = words[w].load(ordering: .acquiring)
        let allocated = (value >> bit) & 1 != 0
        var differ = (allocated ? ~value : value) >> bit
        if differ != 0 { return (allocated, min(limit, UInt64(differ.trailingZeroBitCount))) }
        var length = 64 - bit
        while length < limit {
            w += 1
            let v = words[w].load(ordering: .acquiring)
            differ = allocated ? ~v : v
            if differ != 0 {
                length += UInt64(differ.trailingZeroBitCount)
                break
            }
            length += 64
        }
        return (allocated, min(limit, length))
    }

    /// Whether all `count` sectors from `sector` are allocated.
    @inline(__always)
    public func allSet(from sector: UInt64, count: UInt64) -> Bool {
        var s = sector
        let end = sector + count
        while s < end {
            let bit = s & 63
            let n = min(64 - bit, end - s)
            let mask = n == 64 ? UInt64.max : ((UInt64(1) << n) - 1) << bit
            if words[Int(s >> 6)].load(ordering: .acquiring) & mask != mask { return false }
            s += n
        }
        return true
    }

    /// Marks `count` sectors from `sector` allocated (call after their data is written).
    public func set(from sector: UInt64, count: UInt64) {
        var s = sector
        let end = sector + count
        var touched = false
        while s < end {
            let w = Int(s >> 6)
            let bit = s & 63
            let n = min(64 - bit, end - s)
            let mask = n == 64 ? UInt64.max : ((UInt64(1) << n) - 1) << bit
            if words[w].load(ordering: .relaxed) & mask != mask {
                let old = words[w].bitwiseOr(mask, ordering: .releasing).oldValue
                if old & mask != mask {
                    dirty[w / Self.wordsPerPage].bitwiseOr(3, ordering: .releasing)
                    touched = true
                }
            }
            s += n
        }
        if touched { changed.store(true, ordering: .releasing) }
    }

    /// Whether page `page` changed since slot `slot` was written; clears that.
    public func takeDirty(page: Int, slot: Int) -> Bool {
        let bit = UInt8(1 << slot)
        return dirty[page].bitwiseAnd(~bit, ordering: .acquiringAndReleasing).oldValue & bit != 0
    }

    /// Marks every page as needing a rewrite into slot `slot`.
    public func markAllDirty(slot: Int) {
        for p in 0..<pageCount { dirty[p].bitwiseOr(UInt8(1 << slot), ordering: .releasing) }
    }

    /// Writes page `page` (little-endian words) into `buffer` (4 KiB).
    public func copyPage(_ page: Int, to buffer: UnsafeMutableRawPointer) {
        let first = page * Self.wordsPerPage
        for i in 0..<Self.wordsPerPage {
            buffer.storeBytes(of: words[first + i].load(ordering: .acquiring).littleEndian,
                              toByteOffset: i * 8, as: UInt64.self)
        }
    }

    /// Loads page `page` from its on-disk form (while nothing else runs).
    public func loadPage(_ page: Int, from buffer: UnsafeRawPointer) {
        let first = page * Self.wordsPerPage
        for i in 0..<Self.wordsPerPage {
            let v = UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
            words[first + i].store(v, ordering: .relaxed)
        }
    }

    /// Whether any bit at or beyond `sectorCount` is set (a damaged map).
    public func hasBitsPastEnd() -> Bool {
        var s = sectorCount
        while s < UInt64(wordCount) * 64 {
            if s & 63 == 0 {
                if words[Int(s >> 6)].load(ordering: .relaxed) != 0 { return true }
                s += 64
            } else {
                if isSet(s) { return true }
                s += 1
            }
        }
        return false
    }

    /// Sectors allocated (for statistics).
    public func allocatedSectors() -> UInt64 {
        var total: UInt64 = 0
        for i in 0..<wordCount { total += UInt64(words[i].load(ordering: .relaxed).nonzeroBitCount) }
        return total
    }
}
