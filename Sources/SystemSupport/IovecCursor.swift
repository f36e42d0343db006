import Glibc

/// A position inside a guest request's scatter list: copies bytes in or out
/// and moves data between a file and the next bytes of the list. Holds no
/// memory of its own except a borrowed scratch iovec array for vectored calls.
public struct IovecCursor {
    public let iovecs: UnsafePointer<iovec>
    public let count: Int
    private var index = 0
    private var skip = 0

    public init(_ iovecs: UnsafePointer<iovec>, count: Int) {
        self.iovecs = iovecs
        self.count = count
    }

    /// Copies `length` bytes from `source` into the list (read side).
    public mutating func copyIn(from source: UnsafeRawPointer, length: Int) {
        var done = 0
        while done < length && index < count {
            let piece = iovecs[index]
            let room = piece.iov_len - skip
            let n = min(room, length - done)
            if n > 0, let base = piece.iov_base {
                (base + skip).copyMemory(from: source + done, byteCount: n)
            }
            advance(n, room: room)
            done += n
        }
    }

    /// Fills `length` bytes of the list with zeroes.
    public mutating func zero(length: Int) {
        var done = 0
        while done < length && index < count {
            let piece = iovecs[index]
            let room = piece.iov_len - skip
            let n = min(room, length - done)
            if n > 0, let base = piece.iov_base { memset(base + skip, 0, n) }
            advance(n, room: room)
            done += n
        }
    }

    /// preadv (`write == false`) or pwritev of the next `length` bytes of the
    /// list at `fileOffset`, using `scratch` (capacity `scratchCount`) for the
    /// sub-list. Returns 0, or a negated errno; end of file on a read yields zeroes.
    public mutating func transfer(write: Bool, fd: Int32, fileOffset: UInt64, length: Int,
                           scratch: UnsafeMutablePointer<iovec>, scratchCount: Int) -> Int32 {
        var remaining = length
        var position = fileOffset
        while remaining > 0 {
            // Build a sub-list covering up to `remaining` bytes.
            var n = 0
            var bytes = 0
            var i = index
            var s = skip
            while n < scratchCount && i < count && bytes < remaining {
                let piece = iovecs[i]
                let take = min(piece.iov_len - s, remaining - bytes)
                if take > 0 {
                    scratch[n] = iovec(iov_base: piece.iov_base.map { $0 + s }, iov_len: take)
                    n += 1
                    bytes += take
                }
                i += 1
                s = 0
            }
            if n == 0 { return -EIO }
            let moved = sysCallResult {
                write ? pwritev(fd, scratch, Int32(n), off_t(truncatingIfNeeded: position))
                    : preadv(fd, scratch, Int32(n), off_t(truncatingIfNeeded: position))
            }
            if moved < 0 { return Int32(moved) }
            if moved == 0 {
                if write { return -EIO }
                // Past the end of a sparse file: zeroes.
                zero(length: remaining)
                return 0
            }
            skipBytes(moved)
            remaining -= moved
            position += UInt64(moved)
        }
        return 0
    }

    /// Moves past `length` bytes without touching them.
    public mutating func skipBytes(_ length: Int) {
        var done = 0
        while done < length && index < count {
            let room = iovecs[index].iov_len - skip
            let n = min(room, length - done)
            advance(n, room: room)
            done += n
        }
    }

    @inline(__always)
    private mutating func advance(_ n: Int, room: Int) {
        if n == room {
            index += 1
            skip = 0
        } else {
            skip += n
        }
    }
}
