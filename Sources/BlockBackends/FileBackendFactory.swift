import SystemSupport
import CAsyncIO
import Glibc

/// How a file backend moves data: io_uring, Linux AIO (libaio), or plain
/// synchronous syscalls on the queue thread.
public enum FileEngine: String, Sendable, CaseIterable {
    case uring, aio, sync
}

/// A backend over an image file or a block device. Opening validates (and,
/// when asked, creates or grows) the image; every queue then opens its own fd
/// and its own ring or AIO context, so queues share nothing but the geometry.
public struct FileBackendFactory: BlockBackendFactory {
    /// The image file or block device.
    public let path: String
    /// How every queue moves its data.
    public let engine: FileEngine
    /// Queues open the image with O_DIRECT.
    public let direct: Bool
    public let geometry: BackendGeometry
    /// The image is a block device (rather than a regular file).
    public let isBlockDevice: Bool
    /// The size the queues range-check against; an online resize changes it.
    public let liveCapacity: CapacityCell
    private let image: FileImage
    /// The opened inode (device, inode number), so a resize changes that very file.
    var imageIdentity: (device: UInt64, inode: UInt64) { (image.device, image.inode) }
    /// Holds the image's writer lock while the backend lives.
    private let lock: ImageLock

    public var summary: String {
        var flags = [engine.rawValue]
        if direct { flags.append("direct") }
        if geometry.readOnly { flags.append("ro") }
        return "file:\(path) (\(flags.joined(separator: ", ")))"
    }

    /// Opens the image at `path`.
    /// - Parameters:
    ///   - size: bytes to expose, a positive multiple of 512. When given, a
    ///     missing regular file is created sparse, a smaller one grown, and a
    ///     larger one refused (`.wouldShrink`); nil uses the current size (the
    ///     file must then exist).
    ///   - readOnly: open O_RDONLY; writes then complete with -EBADF.
    ///   - direct: O_DIRECT; `geometry.requiredAlignment` then says how to align.
    ///   - engine: checked to be usable here (`.engineUnavailable` if not).
    public init(path: String, size: UInt64? = nil, readOnly: Bool = false, direct: Bool = false,
                engine: FileEngine = .uring) throws(BackendError) {
        let (image, lock) = try FileImage.prepare(path: path, size: size, readOnly: readOnly, direct: direct)
        try Self.probe(engine)
        if direct {
            // Fail now, not when the first queue starts, if O_DIRECT is refused (e.g. tmpfs).
            close(try image.openQueueFD())
        }
        self.image = image
        self.lock = lock
        liveCapacity = CapacityCell(image.capacityBytes)
        self.path = path
        self.engine = engine
        self.direct = direct
        self.isBlockDevice = image.kind == .blockDevice
        geometry = BackendGeometry(capacityBytes: image.capacityBytes, readOnly: readOnly,
                                   supportsDiscard: image.supportsDiscard,
                                   supportsWriteZeroes: !readOnly,
                                   requiredAlignment: image.alignment)
    }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        guard depth > 0 && depth <= 32768 else {
            throw .invalidSpec("queue depth \(depth) is not in 1...32768")
        }
        let fd = try image.openQueueFD()
        let alignment = Int(image.alignment)
        switch engine {
        case .uring: return try UringQueueBackend(fd: fd, alignment: alignment, capacity: liveCapacity, depth: depth)
        case .aio: return try AioQueueBackend(fd: fd, alignment: alignment, capacity: liveCapacity, depth: depth)
        case .sync: return SyncQueueBackend(fd: fd, alignment: alignment, capacity: liveCapacity, depth: depth)
        }
    }

    /// Creates and drops a one-entry ring or AIO context, so an engine the
    /// kernel (or a sandbox) forbids is reported when the backend is opened.
    private static func probe(_ engine: FileEngine) throws(BackendError) {
        var err: Int32 = 0
        switch engine {
        case .uring:
            guard let ring = vb_uring_create(1, 0, &err) else {
                throw .engineUnavailable(engine: engine.rawValue, errno: -err)
            }
            vb_uring_destroy(ring)
        case .aio:
            guard let context = vb_aio_create(1, 1, &err) else {
                throw .engineUnavailable(engine: engine.rawValue, errno: -err)
            }
            vb_aio_destroy(context)
        case .sync:
            break
        }
    }
}
