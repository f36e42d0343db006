import Glibc

/// Exact-length positional reads and writes on a descriptor, through the one
/// syscall wrapper (EINTR retried, short transfers continued). pread/pwrite
/// move no shared offset, so any thread may use them on a shared fd.
public enum PositionalIO {
    /// pread until `count` bytes or end of file: bytes read, or a negated errno.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) -> Int {
        var done = 0
        while done < count {
            let n = sysCallResult { pread(fd, buffer + done, count - done, off_t(truncatingIfNeeded: offset &+ UInt64(done))) }
            if n < 0 { return n }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// pwrite until all `count` bytes are written: `count`, or a negated
    /// errno (-EIO when the file takes no more bytes).
    public static func writeFully(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, at offset: UInt64) -> Int {
        var done = 0
        while done < count {
            let n = sysCallResult { pwrite(fd, buffer + done, count - done, off_t(truncatingIfNeeded: offset &+ UInt64(done))) }
            if n < 0 { return n }
            if n == 0 { return -Int(EIO) }
            done += n
        }
        return done
    }
}
