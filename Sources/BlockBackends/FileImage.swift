import SystemSupport
import CSys
import CAsyncIO
import Glibc

/// What `FileImage.prepare` learned about an image file or block device:
/// everything a queue needs to reopen it and the device needs to describe it.
struct FileImage: Sendable, Equatable {
    /// Regular file or block device.
    enum Kind: Sendable, Equatable { case regularFile, blockDevice }

    var path: String
    var kind: Kind
    /// Bytes exposed to the guest (a positive multiple of 512).
    var capacityBytes: UInt64
    var readOnly: Bool
    var direct: Bool
    /// Offsets and lengths must be multiples of this (512, or what O_DIRECT needs).
    var alignment: UInt32
    /// Hole punching (DISCARD) is expected to work.
    var supportsDiscard: Bool
    /// Identity of the opened inode, so queues reopen the very same file.
    var device: UInt64
    var inode: UInt64

    /// Opens (creating or growing when asked) the image at `path`, validates
    /// its size, takes the image's writer lock and returns what was learned
    /// with the lock (held until it is released).
    ///
    /// - `size == nil`: the image must exist; its current size is used.
    /// - `size` given: a missing regular file is created sparse at that size,
    ///   a smaller one is grown, a larger one is refused (`.wouldShrink`).
    ///   A block device exposes its first `size` bytes (which must fit).
    /// - Anything but a regular file or a block device (a FIFO, a socket, a
    ///   directory) is refused without blocking: the open is non-blocking.
    /// - One writer per image: a writable image gets an exclusive OFD lock
    ///   (a read-only one a shared lock), so two daemons, or a daemon and a
    ///   cooperating tool such as qemu-storage-daemon, cannot both write; a
    ///   writable block device is also opened O_EXCL, which the kernel refuses
    ///   while it is mounted or held by another exclusive opener.
    static func prepare(path: String, size: UInt64?, readOnly: Bool, direct: Bool)
        throws(BackendError) -> (FileImage, ImageLock)
    {
        if path.isEmpty { throw .invalidSpec("empty image path") }
        if let size, size == 0 || size % 512 != 0 {
            throw .badSize("\(size) bytes is not a positive multiple of 512")
        }
        // The setup fd never uses O_DIRECT: it only stats, truncates, probes and
        // holds the lock. Non-blocking, so a FIFO cannot stall the open.
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | vb_io_o_nonblock()
        if size != nil && !readOnly { flags |= O_CREAT }
        var fd: Int32
        do {
            fd = try sysCall("open") { open(path, flags, 0o644) }
        } catch {
            throw openFailure(path: path, errno: error.errno.rawValue, size: size, readOnly: readOnly)
        }
        let lock = ImageLock(fd: fd)
        var st = stat()
        do { _ = try sysCall("fstat") { fstat(fd, &st) } } catch {
            throw .io(what: "fstat \(path)", errno: error.errno.rawValue)
        }
        let format = st.st_mode & S_IFMT
        guard format == S_IFREG || format == S_IFBLK else {
            throw .invalidSpec("\(path) is \(describe(format)), not a regular file or a block device")
        }
        if format == S_IFBLK && !readOnly {
            // O_EXCL on a block device: refused while mounted or exclusively held.
            do {
                fd = try sysCall("open") { open(path, (flags & ~O_CREAT) | O_EXCL) }
            } catch {
                if error.errno.rawValue == EBUSY {
                    throw BackendError(kind: .busy, context: "block device \(path) is in use (mounted, or held by another program)")
                }
                throw .cannotOpen(path: path, errno: error.errno.rawValue)
            }
            lock.replace(with: fd)
        }
        let locked = sysCallResult(returnsNegatedErrno: true) { vb_ofd_lock(fd, readOnly ? 0 : 1) }
        if locked == -EAGAIN || locked == -EACCES {
            throw BackendError(kind: .busy, context: readOnly
                ? "image \(path) is being written by another process (it holds the image's write lock)"
                : "image \(path) is in use by another process (it holds a lock on the image); one writer per image")
        } else if locked < 0 {
            throw .io(what: "locking \(path)", errno: -locked)
        }
        var image = FileImage(path: path, kind: .regularFile, capacityBytes: 0, readOnly: readOnly,
                              direct: direct, alignment: 512, supportsDiscard: false,
                              device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        if format == S_IFREG {
            image.capacityBytes = try regularFileSize(fd: fd, path: path, current: UInt64(st.st_size),
                                                      requested: size, readOnly: readOnly)
            image.supportsDiscard = !readOnly && probePunchHole(fd: fd, at: image.capacityBytes)
            if direct { image.alignment = directAlignment(fd: fd, fallback: 4096) }
        } else if format == S_IFBLK {
            image.kind = .blockDevice
            var bytes: UInt64 = 0
            do { _ = try sysCall("BLKGETSIZE64", returnsNegatedErrno: true) { vb_io_blk_getsize64(fd, &bytes) } }
            catch { throw .io(what: "BLKGETSIZE64 \(path)", errno: error.errno.rawValue) }
            let usable = bytes & ~511
            if let size {
                if size > usable { throw .badSize("\(path) holds only \(usable) bytes, \(size) requested") }
                image.capacityBytes = size
            } else {
                if usable == 0 { throw .badSize("\(path) is smaller than 512 bytes") }
                image.capacityBytes = usable
            }
            image.supportsDiscard = !readOnly && blockDeviceDiscards(st.st_rdev)
            if direct {
                var logical: UInt32 = 0
                if vb_io_blk_logical_block_size(fd, &logical) == 0, logical >= 512 {
                    image.alignment = logical
                } else {
                    image.alignment = 4096
                }
            }
        }
        return (image, lock)
    }

    /// What a failed open of the setup fd means, in the user's terms.
    private static func openFailure(path: String, errno e: Int32, size: UInt64?, readOnly: Bool) -> BackendError {
        guard e == ENOENT else { return .cannotOpen(path: path, errno: e) }
        if size == nil { return .invalidSpec("image \(path) does not exist (give a size to create it)") }
        if readOnly { return .invalidSpec("image \(path) does not exist and cannot be created read-only") }
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        return .invalidSpec("cannot create image \(path): directory \(dir.isEmpty ? "/" : dir) does not exist")
    }

    /// A file type in words.
    private static func describe(_ format: mode_t) -> String {
        switch format {
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFDIR: return "a directory"
        case S_IFLNK: return "a symbolic link"
        default: return "of an unknown file type"
        }
    }

    /// Opens a new fd on the image for one queue, checking it is still the same inode.
    func openQueueFD() throws(BackendError) -> Int32 {
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        if direct { flags |= vb_io_o_direct() }
        let fd: Int32
        do { fd = try sysCall("open") { open(path, flags) } } catch {
            throw .cannotOpen(path: path, errno: error.errno.rawValue)
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let e = errno
            close(fd)
            throw .io(what: "fstat \(path)", errno: e)
        }
        if UInt64(st.st_dev) != device || UInt64(st.st_ino) != inode {
            close(fd)
            throw .invalidSpec("image \(path) was replaced while the device was running")
        }
        return fd
    }

    private static func regularFileSize(fd: Int32, path: String, current: UInt64, requested: UInt64?,
                                        readOnly: Bool) throws(BackendError) -> UInt64 {
        guard let requested else {
            if current == 0 { throw .badSize("image \(path) is empty (give a size to grow it)") }
            if current % 512 != 0 {
                throw .badSize("image \(path) is \(current) bytes, not a multiple of 512")
            }
            return current
        }
        if requested < current {
            throw .wouldShrink(path: path, current: current, requested: requested)
        }
        if requested > current {
            if readOnly { throw .invalidSpec("cannot grow read-only image \(path) to \(requested) bytes") }
            do { _ = try sysCall("ftruncate") { ftruncate(fd, off_t(requested)) } } catch {
                throw .io(what: "growing \(path) to \(requested) bytes", errno: error.errno.rawValue)
            }
        }
        return requested
    }

    /// Punching a hole past EOF (KEEP_SIZE) changes nothing but tells whether
    /// the file system supports hole punching at all.
    private static func probePunchHole(fd: Int32, at end: UInt64) -> Bool {
        let mode = Int32(VB_FALLOC_PUNCH_HOLE | VB_FALLOC_KEEP_SIZE)
        return (try? sysCall("fallocate", returnsNegatedErrno: true) {
            vb_io_fallocate(fd, mode, end, 4096)
        }) != nil
    }

    /// O_DIRECT offset alignment the file system reports (statx DIOALIGN), else `fallback`.
    private static func directAlignment(fd: Int32, fallback: UInt32) -> UInt32 {
        var memAlign: UInt32 = 0, offsetAlign: UInt32 = 0
        guard vb_io_statx_dio_align(fd, &memAlign, &offsetAlign) == 0, offsetAlign > 0 else {
            return fallback
        }
        return max(512, offsetAlign)
    }

    /// A block device discards unless sysfs says its discard_max_bytes is 0.
    private static func blockDeviceDiscards(_ rdev: dev_t) -> Bool {
        let dev = UInt64(rdev)  // glibc's major()/minor() encoding
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)
        let minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
        let sysfs = "/sys/dev/block/\(major):\(minor)/queue/discard_max_bytes"
        let fd = open(sysfs, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return true }
        defer { close(fd) }
        var buffer = (UInt8(0), UInt8(0), UInt8(0), UInt8(0))
        let n = withUnsafeMutableBytes(of: &buffer) { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return true }
        // "0\n" means no discard; any other value (or a longer number) means some.
        return !(buffer.0 == UInt8(ascii: "0") && (n == 1 || buffer.1 == UInt8(ascii: "\n")))
    }
}

extension FileImage {
    /// True when `fd` is a file on tmpfs or ramfs: its I/O is a memory copy
    /// that never waits for a device.
    static func isMemoryBacked(fd: Int32) -> Bool {
        let type = vb_io_fs_type(fd)
        return type == 0x0102_1994 /* TMPFS_MAGIC */ || type == 0x8584_58f6 /* RAMFS_MAGIC */
    }
}

/// The descriptor that holds an image's lock (an OFD lock, and O_EXCL on a
/// writable block device) for as long as the backend lives. Owns the fd.
final class ImageLock: @unchecked Sendable {
    private(set) var fd: Int32

    init(fd: Int32) { self.fd = fd }

    /// Swaps in `other` (closing the old descriptor) while still setting up.
    func replace(with other: Int32) {
        close(fd)
        fd = other
    }

    deinit { close(fd) }
}
