import SystemSupport
import CSys
import CAsyncIO
import Glibc

/// Synchronous file operations for one queue's fd: the whole sync engine, and
/// the fallbacks of the async engines (short transfers, unsupported fallocate
/// modes, ops the kernel interface cannot express). Remembers which fallocate
/// modes the file system refused so it stops asking. Results are byte counts
/// or negated errnos, never thrown.
final class SyncFileOps {
    let fd: Int32
    /// Offset/length alignment the fd needs (for the zero buffer under O_DIRECT).
    let alignment: Int
    private(set) var punchHoleWorks = true
    private(set) var zeroRangeWorks = true
    /// Allocated on first use of the write-zeroes-by-writing fallback.
    private var zeroBuffer: UnsafeMutableRawPointer?
    private static let zeroBufferSize = 1 << 20

    static let punchHoleMode = Int32(VB_FALLOC_PUNCH_HOLE | VB_FALLOC_KEEP_SIZE)
    static let zeroRangeMode = Int32(VB_FALLOC_ZERO_RANGE | VB_FALLOC_KEEP_SIZE)

    /// Bytes the device exposes now: nothing at or past it is read or written
    /// (a block device may be exposed only in part; a file must not grow).
    let capacity: CapacityCell

    init(fd: Int32, alignment: Int, capacity: CapacityCell) {
        self.fd = fd
        self.alignment = max(alignment, 512)
        self.capacity = capacity
    }

    /// True when `[offset, offset + length)` reaches past the device.
    @inline(__always)
    func outOfRange(_ offset: UInt64, _ length: UInt64) -> Bool {
        let bytes = capacity.current
        return offset > bytes || length > bytes - offset
    }

    deinit {
        free(zeroBuffer)
    }

    /// Runs any op to completion.
    func run(_ op: OpRecord) -> Int32 {
        if op.kind != .flush, outOfRange(op.offset, op.length) { return -EIO }
        switch op.kind {
        case .read, .write:
            guard let iovecs = op.iovecs else { return op.length == 0 ? 0 : -EINVAL }
            return transfer(write: op.kind == .write, offset: op.offset, iovecs: iovecs,
                            count: op.iovecCount, total: op.length, done: 0)
        case .flush:
            return flush()
        case .discard:
            return discard(offset: op.offset, length: op.length)
        case .writeZeroes:
            return writeZeroes(offset: op.offset, length: op.length, unmap: op.unmap)
        }
    }

    /// preadv/pwritev until `total` bytes are done, starting after the first
    /// `done` (which an async engine already moved). End of file before
    /// `total` is -EIO.
    func transfer(write: Bool, offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int,
                  total: UInt64, done alreadyDone: UInt64) -> Int32 {
        if total > UInt64(Int32.max) { return -EINVAL }
        var done = alreadyDone
        while done < total {
            // Find where the transfer stopped.
            var index = 0
            var skip = done
            while index < count && skip >= UInt64(iovecs[index].iov_len) {
                skip -= UInt64(iovecs[index].iov_len)
                index += 1
            }
            if index == count { return -EIO }
            let position = off_t(truncatingIfNeeded: offset &+ done)
            let moved: Int
            do {
                if skip > 0 {
                    var partial = iovecs[index]
                    partial.iov_base = partial.iov_base.map { $0 + Int(skip) }
                    partial.iov_len -= Int(skip)
                    moved = try sysCall(write ? "pwritev" : "preadv") {
                        write ? pwritev(fd, &partial, 1, position) : preadv(fd, &partial, 1, position)
                    }
                } else {
                    let n = Int32(min(count - index, maxIovecsPerCall))
                    moved = try sysCall(write ? "pwritev" : "preadv") {
                        write ? pwritev(fd, iovecs + index, n, position)
                            : preadv(fd, iovecs + index, n, position)
                    }
                }
            } catch {
                return error.negated
            }
            if moved == 0 { return -EIO }
            done += UInt64(moved)
        }
        return Int32(total)
    }

    func flush() -> Int32 {
        do {
            _ = try sysCall("fdatasync") { fdatasync(fd) }
            return 0
        } catch {
            return error.negated
        }
    }

    func fallocate(mode: Int32, offset: UInt64, length: UInt64) -> Int32 {
        do {
            _ = try sysCall("fallocate", returnsNegatedErrno: true) {
                vb_io_fallocate(fd, mode, offset, length)
            }
            return 0
        } catch {
            return error.negated
        }
    }

    /// Punches a hole (KEEP_SIZE); -EOPNOTSUPP when the file system cannot.
    func discard(offset: UInt64, length: UInt64) -> Int32 {
        guard punchHoleWorks else { return -EOPNOTSUPP }
        let result = fallocate(mode: Self.punchHoleMode, offset: offset, length: length)
        if result == -EOPNOTSUPP { punchHoleWorks = false }
        return result
    }

    /// Records that the file system refused fallocate `mode` with EOPNOTSUPP.
    func noteUnsupported(mode: Int32) {
        if mode == Self.punchHoleMode { punchHoleWorks = false }
        if mode == Self.zeroRangeMode { zeroRangeWorks = false }
    }

    /// The fallocate mode that should zero a range, best first: punch when
    /// unmapping is allowed, else zero-range, else punch; nil when only
    /// writing zeroes is left.
    func zeroingMode(unmap: Bool) -> Int32? {
        if unmap && punchHoleWorks { return Self.punchHoleMode }
        if zeroRangeWorks { return Self.zeroRangeMode }
        if punchHoleWorks { return Self.punchHoleMode }
        return nil
    }

    /// Zeroes a range with the best mode that works, writing zeroes as a last resort.
    func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) -> Int32 {
        while let mode = zeroingMode(unmap: unmap) {
            let result = fallocate(mode: mode, offset: offset, length: length)
            if result != -EOPNOTSUPP { return result }
            noteUnsupported(mode: mode)
        }
        return writeZeroBytes(offset: offset, length: length)
    }

    /// Writes `length` zero bytes at `offset` from a shared zero buffer.
    func writeZeroBytes(offset: UInt64, length: UInt64) -> Int32 {
        if zeroBuffer == nil {
            var memory: UnsafeMutableRawPointer?
            guard posix_memalign(&memory, max(alignment, 4096), Self.zeroBufferSize) == 0,
                  let memory else { return -ENOMEM }
            memset(memory, 0, Self.zeroBufferSize)
            zeroBuffer = memory
        }
        var done: UInt64 = 0
        while done < length {
            let chunk = Int(min(length - done, UInt64(Self.zeroBufferSize)))
            do {
                let n = try sysCall("pwrite") {
                    pwrite(fd, zeroBuffer, chunk, off_t(truncatingIfNeeded: offset &+ done))
                }
                if n == 0 { return -EIO }
                done += UInt64(n)
            } catch {
                return error.negated
            }
        }
        return 0
    }
}
