import BlockBackends
import SystemSupport
import Glibc

/// An open file descriptor with exact-length positional I/O (through the
/// one syscall wrapper: EINTR retried, short transfers continued). Owns the fd (closed on deinit). pread/pwrite do
/// not move a shared offset, so one `PosixFile` may be used by several
/// threads at once; hence `@unchecked Sendable`.
public final class PosixFile: @unchecked Sendable {
    public let fd: Int32
    public let path: String

    public init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Opens `path` with `flags` (O_CLOEXEC is added).
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(ImageError) -> PosixFile {
        guard !path.isEmpty, !path.utf8.contains(0) else { throw .invalidArgument("bad path '\(path)'") }
        do {
            return PosixFile(fd: try sysCall("open \(path)") { Glibc.open(path, flags | O_CLOEXEC, mode) }, path: path)
        } catch {
            throw ImageError(error)
        }
    }

    /// Opens an image (or overlay) file without ever blocking: non-blocking,
    /// then anything but a regular file or a block device (a FIFO, a socket,
    /// a directory) is refused by name before it is read, and the descriptor
    /// is made blocking again for ordinary I/O.
    public static func openImage(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(ImageError) -> PosixFile {
        let file = try open(path, flags: flags | O_NONBLOCK, mode: mode)
        var st = stat()
        guard fstat(file.fd, &st) == 0 else { throw .io(what: "fstat \(path)", errno: errno) }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else {
            let what = type == S_IFIFO ? "a FIFO" : type == S_IFSOCK ? "a socket" : type == S_IFCHR ? "a character device"
                : type == S_IFDIR ? "a directory" : "not a file"
            throw .invalidArgument("\(path) is \(what), not a regular file or a block device")
        }
        _ = fcntl(file.fd, F_SETFL, fcntl(file.fd, F_GETFL) & ~O_NONBLOCK)
        return file
    }

    deinit { close(fd) }

    /// Bytes in the file (regular files and block devices).
    public func size() throws(ImageError) -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(what: "fstat \(path)", errno: errno) }
        if st.st_mode & S_IFMT == S_IFREG { return UInt64(st.st_size) }
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { throw .io(what: "lseek \(path)", errno: errno) }
        return UInt64(end)
    }

    /// Reads exactly `count` bytes at `offset`; end of file first is `.truncated`.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws(ImageError) {
        let result = readFully(into: buffer, count: count, at: offset)
        if result < 0 { throw .io(what: "read \(path) at \(offset)", errno: Int32(-result)) }
        if result < count {
            throw .truncated("\(path) ends at \(offset + UInt64(result)), \(count) bytes were needed at \(offset)")
        }
    }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(count: Int, at offset: UInt64) throws(ImageError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: ImageError?
        bytes.withUnsafeMutableBytes { b in
            guard let base = b.baseAddress else { return }
            do throws(ImageError) { try read(into: base, count: count, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// pread until `count` bytes or end of file: bytes read, or a negated errno.
    public func readFully(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) -> Int {
        PositionalIO.readFully(fd, into: buffer, count: count, at: offset)
    }

    /// Writes all `count` bytes at `offset`.
    public func write(_ buffer: UnsafeRawPointer, count: Int, at offset: UInt64) throws(ImageError) {
        let result = writeFully(buffer, count: count, at: offset)
        if result < 0 { throw .io(what: "write \(path) at \(offset)", errno: Int32(-result)) }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(ImageError) {
        var failure: ImageError?
        bytes.withUnsafeBytes { b in
            guard let base = b.baseAddress else { return }
            do throws(ImageError) { try write(base, count: b.count, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// pwrite until all `count` bytes are written: `count`, or a negated errno.
    public func writeFully(_ buffer: UnsafeRawPointer, count: Int, at offset: UInt64) -> Int {
        PositionalIO.writeFully(fd, buffer, count: count, at: offset)
    }

    /// fdatasync: 0 or a negated errno.
    public func syncData() -> Int32 {
        sysCallResult { fdatasync(fd) }
    }

    public func sync() throws(ImageError) {
        do { _ = try sysCall("fsync \(path)") { fsync(fd) } } catch { throw ImageError(error) }
    }

    public func truncate(to size: UInt64) throws(ImageError) {
        guard ftruncate(fd, off_t(truncatingIfNeeded: size)) == 0 else {
            throw .io(what: "truncate \(path) to \(size)", errno: errno)
        }
    }

    /// fsyncs the directory holding `path`, so a rename or create in it is durable.
    public static func syncDirectory(of path: String) throws(ImageError) {
        let dir: String
        if let slash = path.lastIndex(of: "/") {
            dir = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            dir = "."
        }
        let file = try PosixFile.open(dir, flags: O_RDONLY | O_DIRECTORY)
        try file.sync()
    }

    /// rename(2) with a typed error.
    public static func rename(_ from: String, to: String) throws(ImageError) {
        guard Glibc.rename(from, to) == 0 else { throw .io(what: "rename \(from) to \(to)", errno: errno) }
    }
}
