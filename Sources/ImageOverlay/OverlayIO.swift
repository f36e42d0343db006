import BlockBackends
import SystemSupport
import Glibc

/// The guest-facing I/O of an overlaid disk, shared by every backend that
/// layers an `Overlay` over a read-only base (zstd images, remote objects):
/// reads merge overlay and base run by run, writes and zeroes land in the
/// overlay only. Callers own the scratch iovecs; nothing here allocates.
extension Overlay {
    /// Fills `cursor` with disk bytes `[offset, offset + total)`: runs the
    /// overlay holds come from its file, the others from `base(from, to, &cursor)`.
    /// 0, or the first negated errno.
    public func readMerged(offset: UInt64, total: UInt64, cursor: inout IovecCursor,
                           scratch: UnsafeMutablePointer<iovec>, scratchCount: Int,
                           base: (UInt64, UInt64, inout IovecCursor) -> Int32) -> Int32 {
        var position = offset
        let end = offset + total
        while position < end {
            let sector = position / OverlayLayout.sectorSize
            let last = (end - 1) / OverlayLayout.sectorSize
            let run = map.run(from: sector, limit: last - sector + 1)
            let runEnd = min(end, (sector + run.length) * OverlayLayout.sectorSize)
            let rc: Int32
            if run.allocated {
                rc = cursor.transfer(write: false, fd: file.fd, fileOffset: layout.dataOffset + position,
                                     length: Int(runEnd - position), scratch: scratch, scratchCount: scratchCount)
            } else {
                rc = base(position, runEnd, &cursor)
            }
            if rc < 0 { return rc }
            position = runEnd
        }
        return 0
    }

    /// Writes the guest's `total` bytes at disk offset `offset` (sector-aligned,
    /// in range: checked by the caller) into the overlay: bytes, or a negated errno.
    public func write(offset: UInt64, total: UInt64, iovecs: UnsafePointer<iovec>, count: Int,
                      scratch: UnsafeMutablePointer<iovec>, scratchCount: Int) -> Int32 {
        guard offset % OverlayLayout.sectorSize == 0, total % OverlayLayout.sectorSize == 0 else { return -EINVAL }
        var cursor = IovecCursor(iovecs, count: count)
        let rc = cursor.transfer(write: true, fd: file.fd, fileOffset: layout.dataOffset + offset,
                                 length: Int(total), scratch: scratch, scratchCount: scratchCount)
        if rc < 0 { return rc }
        let noted = noteWritten(offset: offset, length: total)
        return noted < 0 ? noted : Int32(total)
    }

    /// DISCARD / WRITE_ZEROES of an in-range extent: 0, or a negated errno.
    public func zero(offset: UInt64, length: UInt64) -> Int32 {
        guard offset % OverlayLayout.sectorSize == 0, length % OverlayLayout.sectorSize == 0 else { return -EINVAL }
        if length == 0 { return 0 }
        return zeroRange(offset: offset, length: length)
    }

    /// Sectors the overlay holds.
    public var allocatedSectors: UInt64 { map.allocatedSectors() }
}
