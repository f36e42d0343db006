@_spi(Fuzzing) import ImageOverlay
import SystemSupport
import Glibc
@_spi(Fuzzing) import ZstdImage

/// Fuzz target "overlay": zstd/remote overlay files (`Overlay.open`: the
/// superblock, both allocation-map slots with their header, page checksum
/// table and map pages, slot choice, bits past the end), then guest I/O
/// through the opened overlay (`write`, `zero`, `readMerged`), `flush` and a
/// reopen, or a crash (no final flush) and a reopen that replays the map journal. The file is a valid overlay made by `Overlay.open` itself for a
/// small base (1 MiB, 4 MiB, 3 MiB + 512, or 16 MiB + 64 KiB: two map
/// pages), fresh or after two flushes of written data, which the input then
/// damages; unless told not to, the harness recomputes the checksums behind
/// the damage so it reaches the fields they guard.
///
/// Input: flags (bit 0 keep the superblock checksum, bit 1 keep the slot
/// header and table checksums, bit 2 keep the page checksums, bit 3 raw: a
/// u16 length and that many bytes replace the file's start, bits 4-5 the
/// base size, bit 6 the written template, bit 7 crash instead of the final
/// flush), then up to 31 patches (op byte:
/// 0 a byte, 1 a u64, 2 a u32, 3 resize the file; a u16 offset; the value),
/// then up to 15 I/O operations (op byte mod 4: write, zero, read, flush).
///
/// Checks: no crash (ASan watches the buffers); an overlay that opens has no
/// map bits past the disk's end; reads of in-range extents return 0 or a
/// negated errno and only ask the base for ranges inside the extent, never
/// for sectors written in this run; what was written (or zeroed) in this run
/// reads back exactly, before and after the reopen; `flush()` succeeds, and
/// a reopen sees the same number of allocated sectors. After a crash too:
/// every completed write or zero reads back (the map journal keeps them).
public enum OverlayFuzzer {
    static let path: String = {
        var template = Array((access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp").utf8CString.dropLast())
            + Array("/vduse-blk-fuzz-overlay-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        precondition(fd >= 0, "mkstemp failed")
        close(fd)
        let p = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        overlayAtexitPath = strdup(p)
        atexit { if let p = overlayAtexitPath { unlink(p) } }
        return p
    }()

    static let sizes: [UInt64] = [1 << 20, 4 << 20, (3 << 20) + 512, (16 << 20) + (64 << 10)]

    /// Where an overlay of `capacity` bytes keeps things (docs/zstd-image-format.md).
    struct Layout {
        let capacity: UInt64
        let pageCount: Int
        let headerRegion: Int
        let slotOffsets: [Int]
        let metaEnd: Int
        let dataOffset: Int

        init(capacity: UInt64) {
            self.capacity = capacity
            pageCount = Int((capacity / 512 + 32767) / 32768)
            headerRegion = (64 + 8 * pageCount + 4095) / 4096 * 4096
            let slotSize = headerRegion + pageCount * 4096
            slotOffsets = [4096, 4096 + slotSize]
            metaEnd = 4096 + 2 * slotSize
            dataOffset = (metaEnd + (1 << 20) - 1) / (1 << 20) * (1 << 20)
        }

        func pageOffset(slot: Int, page: Int) -> Int { slotOffsets[slot] + headerRegion + page * 4096 }
    }

    static func base(_ capacity: UInt64) -> OverlayBase {
        OverlayBase(logicalSize: capacity, chunkSize: 4096, contentDigest: 0x5EED_F00D_CAFE_0001, name: "fuzz-base")
    }

    /// The metadata part (superblock and both slots) of a valid overlay, per size and template.
    nonisolated(unsafe) static var templates: [Int: [UInt8]] = [:]

    static func template(size: Int, written: Bool) -> [UInt8] {
        let key = size * 2 + (written ? 1 : 0)
        if let t = templates[key] { return t }
        let capacity = sizes[size]
        unlink(path)
        do {
            let overlay = try Overlay.open(path: path, base: base(capacity))
            if written {
                let sectors = capacity / 512
                for (first, count) in [(0, 8), (sectors / 2, 1), (sectors - 1, 1)] as [(UInt64, UInt64)] {
                    _ = writeSectors(overlay, sector: first, count: count, fill: 0x11)
                    if first == 0 { precondition(overlay.flush() == 0, "template flush failed") }
                }
                _ = overlay.zero(offset: 64 * 512, length: 16 * 512)
                precondition(overlay.flush() == 0, "template flush failed")
            }
        } catch {
            preconditionFailure("cannot make a template overlay: \(error)")
        }
        let layout = Layout(capacity: capacity)
        guard let bytes = FuzzMain.readFile(path), bytes.count >= layout.metaEnd else {
            preconditionFailure("template overlay unreadable")
        }
        let t = Array(bytes[0..<layout.metaEnd])
        templates[key] = t
        return t
    }

    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let flags = input.u8()
        let size = Int(flags >> 4 & 3)
        let layout = Layout(capacity: sizes[size])
        var bytes = template(size: size, written: flags & 0x40 != 0)
        var fileSize = layout.dataOffset + Int(layout.capacity)

        if flags & 8 != 0 {
            let n = min(Int(input.u16()), bytes.count)
            for i in 0..<n { bytes[i] = input.u8() }
        }
        for _ in 0..<Int(input.u8() % 32) {
            let op = input.u8()
            let at = Int(input.u16()) % bytes.count
            switch op & 3 {
            case 0: bytes[at] = input.u8()
            case 1: put(&bytes, at, input.u64(), 8)
            case 2: put(&bytes, at, UInt64(input.u32()), 4)
            default:
                // Truncated anywhere in the metadata, at the data area, or partly into it.
                switch op >> 2 & 3 {
                case 0: fileSize = at
                case 1: fileSize = layout.dataOffset
                case 2: fileSize = layout.dataOffset - 1
                default: fileSize = layout.dataOffset + at * 512
                }
            }
        }
        fixChecksums(&bytes, layout, flags: flags)
        guard writeFile(bytes, size: fileSize) else { return }

        let capacity = layout.capacity
        let sectors = capacity / 512
        /// Sector -> the fill byte it was last written with (0: zeroed) in this run.
        var shadow: [UInt64: UInt8] = [:]
        let allocated: UInt64
        do {
            let overlay: Overlay
            do { overlay = try Overlay.open(path: path, base: base(capacity)) } catch {
                if trace { print("open: \(error)") }
                return
            }
            if trace { print("opened: \(overlay.allocatedSectors) sectors allocated, note: \(overlay.recoveryNote ?? "none")") }
            fuzzCheck(overlay.mapSectorCount == sectors, "map of \(overlay.mapSectorCount) sectors for \(sectors)")
            fuzzCheck(!overlay.mapHasBitsPastEnd, "opened overlay has map bits past the end")
            for _ in 0..<Int(input.u8() % 16) {
                let op = input.u8()
                let near = input.u16()
                let first = op & 0x80 != 0 ? sectors - 1 - UInt64(near) % sectors : (UInt64(near) << 5 | UInt64(op & 31)) % sectors
                let count = min(UInt64(input.u8() % 128) + 1, sectors - first)
                switch op >> 5 & 3 {
                case 0:
                    let fill = input.u8() | 1
                    let rc = writeSectors(overlay, sector: first, count: count, fill: fill)
                    fuzzCheck(rc == Int32(count * 512), "write of \(count) sectors at \(first): \(rc)")
                    for s in first..<(first + count) { shadow[s] = fill }
                case 1:
                    let rc = overlay.zero(offset: first * 512, length: count * 512)
                    fuzzCheck(rc == 0, "zero of \(count) sectors at \(first): \(rc)")
                    for s in first..<(first + count) { shadow[s] = 0 }
                case 2:
                    check(overlay, sector: first, count: count, shadow: shadow)
                default:
                    let rc = overlay.flush()
                    // EOVERFLOW: opened at the last generation a flush may write (a crafted slot).
                    if rc == -EOVERFLOW { return }
                    fuzzCheck(rc == 0, "flush failed: \(rc)")
                }
            }
            fuzzCheck(!overlay.mapHasBitsPastEnd, "map bits past the end after I/O")
            if flags & 0x80 != 0 {
                // A daemon crash: no final flush, the journal must carry every completed op.
                // (Past the last generation no slot can take the replay: the reopen fails.)
                if overlay.generation >= MapSlotHeader.generationLimit - 1 && !shadow.isEmpty { return }
                overlay.abandoned.store(true, ordering: .relaxed)
            } else {
                let rc = overlay.flush()
                if rc == -EOVERFLOW { return }
                fuzzCheck(rc == 0, "flush failed: \(rc)")
            }
            allocated = overlay.allocatedSectors
        }
        // The overlay is gone (its lock with it): reopen what the flush (or the journal) left.
        let again: Overlay
        do { again = try Overlay.open(path: path, base: base(capacity)) } catch {
            return fuzzCheck(false, "flushed overlay does not reopen: \(error)")
        }
        fuzzCheck(again.allocatedSectors == allocated, "reopened with \(again.allocatedSectors) sectors allocated, not \(allocated)")
        fuzzCheck(!again.mapHasBitsPastEnd, "reopened overlay has map bits past the end")
        // Every sector written in this run, in runs of up to 128 (the gaps
        // between them were checked by the reads above, if the input asked).
        var runStart: UInt64?, runEnd: UInt64 = 0
        for s in shadow.keys.sorted() {
            if let start = runStart, s == runEnd, s - start < 128 {
                runEnd = s + 1
                continue
            }
            if let start = runStart { check(again, sector: start, count: runEnd - start, shadow: shadow) }
            runStart = s
            runEnd = s + 1
        }
        if let start = runStart { check(again, sector: start, count: runEnd - start, shadow: shadow) }
    }

    static var trace: Bool { QueueFuzzer.trace }

    static func put(_ bytes: inout [UInt8], _ at: Int, _ value: UInt64, _ width: Int) {
        for i in 0..<width where at + i < bytes.count { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    static func hash(_ bytes: [UInt8], _ range: Range<Int>) -> UInt64 {
        bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    /// Recomputes (per flags) page checksums into each slot's table, the table
    /// checksum, the slot header checksum and the superblock checksum.
    static func fixChecksums(_ bytes: inout [UInt8], _ layout: Layout, flags: UInt8) {
        for slot in 0..<2 {
            let h = layout.slotOffsets[slot]
            if flags & 4 == 0 {
                for p in 0..<layout.pageCount {
                    let at = layout.pageOffset(slot: slot, page: p)
                    put(&bytes, h + 64 + 8 * p, hash(bytes, at..<(at + 4096)), 8)
                }
            }
            if flags & 2 == 0 {
                put(&bytes, h + 24, hash(bytes, (h + 64)..<(h + 64 + 8 * layout.pageCount)), 8)
                put(&bytes, h + 56, hash(bytes, h..<(h + 56)), 8)
            }
        }
        if flags & 1 == 0 {
            // Version 1 (upgraded on open) keeps its checksum at 88, version 2 at 104.
            let checked = bytes[8] == 1 && bytes[9] == 0 && bytes[10] == 0 && bytes[11] == 0 ? 88 : 104
            put(&bytes, checked, hash(bytes, 0..<checked), 8)
        }
    }

    static func writeFile(_ bytes: [UInt8], size: Int) -> Bool {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard ftruncate(fd, 0) == 0 else { return false }
        let n = min(bytes.count, size)
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, n, 0) }
        return written == n && ftruncate(fd, off_t(size)) == 0
    }

    /// Writes `count` sectors of a pattern (fill ^ sector) at `sector`, through two iovecs.
    static func writeSectors(_ overlay: Overlay, sector: UInt64, count: UInt64, fill: UInt8) -> Int32 {
        let length = Int(count * 512)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 512)
        defer { buffer.deallocate() }
        for i in 0..<Int(count) { memset(buffer + i * 512, Int32(pattern(fill, sector + UInt64(i))), 512) }
        let split = length / 2 / 512 * 512
        var iovecs = [iovec(iov_base: buffer, iov_len: split), iovec(iov_base: buffer + split, iov_len: length - split)]
        let scratch = UnsafeMutablePointer<iovec>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        return overlay.write(offset: sector * 512, total: count * 512, iovecs: &iovecs, count: 2,
                             scratch: scratch, scratchCount: 4)
    }

    /// What the base "holds" (0xB5), and where `check` reads to: sized for
    /// the largest read (128 sectors), made once.
    nonisolated(unsafe) static let baseFill: UnsafeRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: 128 * 512, alignment: 512)
        memset(p, 0xB5, 128 * 512)
        return UnsafeRawPointer(p)
    }()
    nonisolated(unsafe) static let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: 128 * 512, alignment: 512)

    static func pattern(_ fill: UInt8, _ sector: UInt64) -> UInt8 {
        fill == 0 ? 0 : fill ^ UInt8(truncatingIfNeeded: sector &* 0x9E) | 1
    }

    /// Reads `count` sectors at `sector` through `readMerged` (three iovecs, a
    /// base that fills 0xB5) and checks the result against `shadow`.
    static func check(_ overlay: Overlay, sector: UInt64, count: UInt64, shadow: [UInt64: UInt8]) {
        let offset = sector * 512, total = count * 512
        let length = Int(total)
        let buffer = readBuffer
        memset(buffer, 0xEE, length)
        let a = length / 3, b = length / 3 * 2
        let iovecs = [iovec(iov_base: buffer, iov_len: a), iovec(iov_base: buffer + a, iov_len: b - a),
                      iovec(iov_base: buffer + b, iov_len: length - b)]
        let scratch = UnsafeMutablePointer<iovec>.allocate(capacity: 2)
        defer { scratch.deallocate() }
        var position = offset
        let rc = iovecs.withUnsafeBufferPointer { list -> Int32 in
            var cursor = IovecCursor(list.baseAddress!, count: 3)
            return overlay.readMerged(offset: offset, total: total, cursor: &cursor, scratch: scratch, scratchCount: 2) {
                from, to, cursor in
                fuzzCheck(from >= position && from < to && to <= offset + total,
                          "base asked for \(from)..<\(to) at \(position) of \(offset)..<\(offset + total)")
                for s in (from / 512)...((to - 1) / 512) {
                    fuzzCheck(shadow[s] == nil, "base asked for sector \(s), written in this run")
                }
                position = to
                cursor.copyIn(from: baseFill, length: Int(to - from))
                return 0
            }
        }
        fuzzCheck(rc == 0 || (rc < 0 && rc > -4096), "readMerged returned \(rc)")
        guard rc == 0 else { return }
        for s in sector..<(sector + count) {
            guard let fill = shadow[s] else { continue }
            let want = pattern(fill, s)
            let at = Int(s - sector) * 512
            for i in 0..<512 where buffer.load(fromByteOffset: at + i, as: UInt8.self) != want {
                return fuzzCheck(false, "sector \(s) byte \(i) reads \(buffer.load(fromByteOffset: at + i, as: UInt8.self)), wrote \(want)")
            }
        }
    }
}

nonisolated(unsafe) private var overlayAtexitPath: UnsafeMutablePointer<CChar>?
