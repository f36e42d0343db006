import CSys
import Glibc
import SystemSupport

extension FileBackendFactory {
    /// Online resize of a file image: a regular file grows (sparse) or, with
    /// `allowShrink`, shrinks with ftruncate; a block device exposes more or
    /// fewer of its own bytes (it never changes size). Works on the very
    /// inode the queues opened (checked by device and inode number).
    public func resize(to bytes: UInt64, allowShrink: Bool) throws(BackendError) -> UInt64 {
        guard bytes > 0, bytes % 512 == 0 else { throw .badSize("\(bytes) bytes is not a positive multiple of 512") }
        if geometry.readOnly { throw BackendError(kind: .unsupported, context: "\(path) is open read-only: cannot resize") }
        let fd = open(path, O_WRONLY | O_CLOEXEC | vb_io_o_nonblock())
        guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(what: "fstat \(path)", errno: errno) }
        guard UInt64(st.st_dev) == imageIdentity.device, UInt64(st.st_ino) == imageIdentity.inode else {
            throw BackendError(kind: .busy, context: "\(path) was replaced by another file since the device was created")
        }
        if isBlockDevice {
            var size: UInt64 = 0
            let rc = vb_io_blk_getsize64(fd, &size)
            if rc < 0 { throw .io(what: "BLKGETSIZE64 \(path)", errno: -rc) }
            guard bytes <= size & ~511 else { throw .badSize("\(path) holds only \(size & ~511) bytes, \(bytes) requested") }
            liveCapacity.store(bytes)
            return bytes
        }
        let current = UInt64(st.st_size)
        if bytes < current && !allowShrink {
            throw .wouldShrink(path: path, current: current, requested: bytes)
        }
        // Queues see a smaller size before the file shrinks, a larger one after it grew.
        let before = liveCapacity.current
        if bytes < before { liveCapacity.store(bytes) }
        if bytes != current {
            do { _ = try sysCall("ftruncate") { ftruncate(fd, off_t(bytes)) } } catch {
                liveCapacity.store(before)
                throw .io(what: "resizing \(path) to \(bytes) bytes", errno: error.errno.rawValue)
            }
        }
        liveCapacity.store(bytes)
        return bytes
    }
}
