import CSys
import Glibc
import VirtioCore

/// A served device's state directory `$VDUSE_BLK_RUN_DIR/NAME/` (default
/// /run/vduse-blk, a tmpfs): `lock` (an OFD lock held by the daemon serving
/// the device, with its pid inside) and `inflight` (the in-flight log). The
/// lock tells a second daemon whether the device's owner is alive.
public final class DeviceStateDirectory {
    public let name: String
    public let path: String
    let lockFD: Int32

    /// `$VDUSE_BLK_RUN_DIR` or /run/vduse-blk.
    public static var runDirectory: String {
        if let d = getenv("VDUSE_BLK_RUN_DIR"), d.pointee != 0 { return String(cString: d) }
        return "/run/vduse-blk"
    }

    public static func path(for name: String) -> String { "\(runDirectory)/\(name)" }

    /// `backend`: what data the device serves (a `BackendIdentity` record
    /// written by `create`, checked when a daemon adopts the device).
    public var backendRecordPath: String { "\(path)/backend" }

    /// Takes the device's lock (creating the directory). Throws `.attach("...
    /// in use by pid N")` while another live process holds it.
    public init(name: String) throws(VDUSEError) {
        try VDUSEControl.validate(name: name)
        self.name = name
        let run = Self.runDirectory
        path = "\(run)/\(name)"
        if mkdir(run, 0o755) != 0, errno != EEXIST {
            throw .ioctl(what: "mkdir \(run)", errno: errno)
        }
        if mkdir(path, 0o700) != 0, errno != EEXIST {
            throw .ioctl(what: "mkdir \(path)", errno: errno)
        }
        var st = stat()
        guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw .attach("\(path) is not a directory")
        }
        let fd = open("\(path)/lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .ioctl(what: "open \(path)/lock", errno: errno) }
        let rc = vb_ofd_lock(fd, 1)
        if rc < 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            close(fd)
            let pid = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingSpaces : "?"
            throw .attach("device \(name) is in use by pid \(pid) (lock \(path)/lock); stop that daemon first")
        }
        let me = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = me.withCString { pwrite(fd, $0, strlen($0), 0) }
        lockFD = fd
    }

    deinit { close(lockFD) }

    /// Removes the log and the lock (after VDUSE_DESTROY_DEV succeeded).
    public func remove() {
        unlink("\(path)/inflight")
        unlink(backendRecordPath)
        unlink("\(path)/lock")
        rmdir(path)
    }

    /// The pid holding the lock of device `name`, nil if none (no directory,
    /// or its owner is dead).
    public static func livingOwner(of name: String) -> Int32? {
        let fd = open("\(path(for: name))/lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if vb_ofd_lock(fd, 0) == 0 { return nil }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buf, 31, 0)
        return n > 0 ? Int32(String(decoding: buf[0..<n], as: UTF8.self).trimmingSpaces) ?? -1 : -1
    }
}

extension String {
    var trimmingSpaces: String {
        String(self.filter { !$0.isWhitespace })
    }
}

/// The device's in-flight log file: a header page, then one
/// `InflightQueueLog` region per queue, in a MAP_SHARED mapping (so a
/// SIGKILL loses no executed store).
///
/// Header (host byte order):
///
///     0  u64 magic "VBDLOG01"   8 u32 version   12 u32 queue count
///     16 u32 max queue size     20 u32 region bytes
///     24 u64 identity (hash of what must match to adopt: config space, features, queues)
///     32 u64 checksum of bytes 0..<32
///     40 u64 negotiated features   48 u32 driver status
public final class InflightLogFile: @unchecked Sendable {
    public static let magic: UInt64 = 0x3130_474F_4C44_4256  // "VBDLOG01"
    public static let version: UInt32 = 1
    public let path: String
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let queueCount: Int
    public let maxQueueSize: UInt16
    let regionBytes: Int

    /// Opens (creating if needed) the log at `path`. `fresh`: initialise it
    /// for a new device whatever it holds. Otherwise (adopting) it must be a
    /// valid log of a device with the same `identity`, or this throws and
    /// leaves the file as it was.
    public init(path: String, queueCount: Int, maxQueueSize: UInt16, identity: UInt64,
                fresh: Bool) throws(VDUSEError) {
        self.path = path
        self.queueCount = queueCount
        self.maxQueueSize = maxQueueSize
        regionBytes = InflightQueueLog.regionBytes(maxQueueSize: maxQueueSize)
        length = 4096 + queueCount * regionBytes
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .ioctl(what: "open \(path)", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { throw .attach("\(path) is not a regular file") }
        if !fresh && Int(st.st_size) != length {
            throw .attach("in-flight log \(path) has \(st.st_size) bytes, this device needs \(length): "
                + "the device was created with another --queues or --queue-size; use the original options")
        }
        if fresh, ftruncate(fd, off_t(length)) != 0 { throw .ioctl(what: "ftruncate \(path)", errno: errno) }
        var err: Int32 = 0
        guard let p = vb_mmap_shared(fd, 0, length, 1, &err) else { throw .ioctl(what: "mmap \(path)", errno: err) }
        base = p
        if fresh {
            p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            p.storeBytes(of: Self.magic, as: UInt64.self)
            p.storeBytes(of: Self.version, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: UInt32(queueCount), toByteOffset: 12, as: UInt32.self)
            p.storeBytes(of: UInt32(maxQueueSize), toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: UInt32(regionBytes), toByteOffset: 20, as: UInt32.self)
            p.storeBytes(of: identity, toByteOffset: 24, as: UInt64.self)
            p.storeBytes(of: Self.checksum(p, 32), toByteOffset: 32, as: UInt64.self)
            for q in 0..<queueCount { queue(q).reset(queueIndex: UInt16(q)) }
            return
        }
        let problem: String? =
            p.load(as: UInt64.self) != Self.magic ? "bad magic"
            : p.load(fromByteOffset: 8, as: UInt32.self) != Self.version ? "unknown version"
            : p.load(fromByteOffset: 32, as: UInt64.self) != Self.checksum(p, 32) ? "header checksum mismatch"
            : p.load(fromByteOffset: 12, as: UInt32.self) != UInt32(queueCount)
                || p.load(fromByteOffset: 16, as: UInt32.self) != UInt32(maxQueueSize)
                || p.load(fromByteOffset: 20, as: UInt32.self) != UInt32(regionBytes)
                ? "it describes \(p.load(fromByteOffset: 12, as: UInt32.self)) queue(s) of up to "
                    + "\(p.load(fromByteOffset: 16, as: UInt32.self)), this device \(queueCount) of up to \(maxQueueSize)"
            : p.load(fromByteOffset: 24, as: UInt64.self) != identity
                ? "it was written for a device with other options (size, block size, features or serial)"
            : nil
        if let problem {
            _ = vb_munmap(p, length)
            throw .attach("in-flight log \(path) cannot be used: \(problem)")
        }
    }

    deinit { _ = vb_munmap(base, length) }

    static func checksum(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 { InflightQueueLog.checksum(p, n) }

    /// A hash of what must match for a daemon to adopt a device.
    public static func identity(deviceID: UInt32, features: UInt64, queueCount: Int, maxQueueSize: UInt16,
                                config: [UInt8]) -> UInt64 {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: deviceID.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: features.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt32(queueCount).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: maxQueueSize.littleEndian) { bytes += $0 }
        bytes += config
        return bytes.withUnsafeBytes { checksum($0.baseAddress!, $0.count) }
    }

    public func queue(_ index: Int) -> InflightQueueLog {
        precondition(index >= 0 && index < queueCount)
        return InflightQueueLog(base: base + 4096 + index * regionBytes, maxQueueSize: maxQueueSize)
    }

    /// The driver status last recorded (the kernel cannot be asked).
    public var status: UInt8 { UInt8(truncatingIfNeeded: base.load(fromByteOffset: 48, as: UInt32.self)) }
    public var negotiatedFeatures: UInt64 { base.load(fromByteOffset: 40, as: UInt64.self) }

    public func record(status: UInt8) {
        vb_fence_release()
        base.storeBytes(of: UInt32(status), toByteOffset: 48, as: UInt32.self)
        vb_fence_release()
    }

    public func record(features: UInt64) {
        base.storeBytes(of: features, toByteOffset: 40, as: UInt64.self)
        vb_fence_release()
    }
}

extension InflightLogFile {
    /// What a log says without knowing the device's options (for `destroy`):
    /// the driver status and how many heads are flagged in flight (an upper
    /// bound: a batch published just before a crash still counts). nil when
    /// the file is missing or not a log.
    public static func inspect(path: String) -> (status: UInt8, inflight: Int)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size >= 4096 else { return nil }
        let length = Int(st.st_size)
        var err: Int32 = 0
        guard let p = vb_mmap_shared(fd, 0, length, 0, &err) else { return nil }
        defer { _ = vb_munmap(p, length) }
        guard p.load(as: UInt64.self) == magic, p.load(fromByteOffset: 8, as: UInt32.self) == version,
              p.load(fromByteOffset: 32, as: UInt64.self) == checksum(p, 32) else { return nil }
        let queues = Int(p.load(fromByteOffset: 12, as: UInt32.self))
        let maxSize = p.load(fromByteOffset: 16, as: UInt32.self)
        let region = Int(p.load(fromByteOffset: 20, as: UInt32.self))
        guard maxSize >= 1, maxSize <= 32768, queues <= 1024,
              region == InflightQueueLog.regionBytes(maxQueueSize: UInt16(maxSize)),
              4096 + queues * region == length else { return nil }
        var inflight = 0
        for q in 0..<queues {
            let r = p + 4096 + q * region
            let size = min(UInt32(r.load(fromByteOffset: 14, as: UInt16.self)), maxSize)
            for h in 0..<Int(size) where r.load(fromByteOffset: 64 + 8 * h, as: UInt64.self) != 0 { inflight += 1 }
        }
        return (UInt8(truncatingIfNeeded: p.load(fromByteOffset: 48, as: UInt32.self)), inflight)
    }
}
