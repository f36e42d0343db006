import BlockBackends
import Glibc
import VDUSEDevice
import VirtioBlk

/// What an online resize did.
public struct ResizeOutcome: Sendable, Equatable {
    public var oldBytes: UInt64
    public var newBytes: UInt64
    /// A config-change interrupt reached the driver. False before DRIVER_OK
    /// (no driver yet: it reads the new capacity when it binds) or unbound.
    public var interruptSent: Bool
    /// Why no interrupt was sent, when none was.
    public var interruptNote: String?

    public init(oldBytes: UInt64, newBytes: UInt64, interruptSent: Bool, interruptNote: String?) {
        self.oldBytes = oldBytes
        self.newBytes = newBytes
        self.interruptSent = interruptSent
        self.interruptNote = interruptNote
    }
}

/// Why an online resize was refused or failed, with the line a user sees.
public enum ResizeError: Error, Equatable, CustomStringConvertible {
    /// The size is zero or not a multiple of the block size.
    case badSize(String)
    /// Smaller than now and shrinking was not asked for.
    case wouldShrink(current: UInt64, requested: UInt64)
    /// The backend refused or failed (nothing changed on the device).
    case backend(BackendError)
    /// The device is not running (before create, after shutdown).
    case notRunning
    /// The config space could not be written (the old capacity stays).
    case config(VDUSEError)

    public var description: String {
        switch self {
        case .badSize(let s): return s
        case .wouldShrink(let c, let r):
            return "refusing to shrink from \(c) to \(r) bytes (data past the new end is lost): pass --shrink to do it"
        case .backend(let e): return e.description
        case .notRunning: return "the device is not running"
        case .config(let e): return "cannot update the config space: \(e)"
        }
    }

    /// A short stable token for scripts (the control socket's `error` field).
    public var code: String {
        switch self {
        case .badSize: return "bad_size"
        case .wouldShrink: return "would_shrink"
        case .backend(let e): return e.kind == .unsupported ? "unsupported" : "backend"
        case .notRunning: return "not_running"
        case .config: return "config"
        }
    }
}

/// Online resize of a virtio-blk device: the order of steps, independent of
/// the kernel. Growing: backend, then the capacity the parsers check, then the
/// config space and a config interrupt. Shrinking: the capacity and config
/// first (new requests past the end fail from then on), then the backend;
/// if the backend fails the old capacity is restored.
public enum OnlineResize {
    public static func perform(to bytes: UInt64, allowShrink: Bool, blockSize: UInt32, capacity: LiveCapacity,
                               backend: any BlockBackendFactory, writer: (any ConfigSpaceWriter)?)
        throws(ResizeError) -> ResizeOutcome
    {
        guard let writer else { throw .notRunning }
        guard bytes > 0, bytes % UInt64(blockSize) == 0 else {
            throw .badSize("size \(bytes) is not a positive multiple of the block size \(blockSize)")
        }
        guard bytes / BlkProtocol.sectorSize <= UInt64(Int64.max) / BlkProtocol.sectorSize else {
            throw .badSize("size \(bytes) is too large")
        }
        let old = capacity.currentBytes
        let shrinking = bytes < old
        if shrinking && !allowShrink { throw .wouldShrink(current: old, requested: bytes) }
        if shrinking {
            capacity.store(bytes)
            do { try writeCapacity(bytes, writer) } catch {
                capacity.store(old)
                throw .config(error)
            }
            do { _ = try backend.resize(to: bytes, allowShrink: true) } catch {
                capacity.store(old)
                try? writeCapacity(old, writer)
                throw .backend(error)
            }
        } else {
            do { _ = try backend.resize(to: bytes, allowShrink: allowShrink) } catch { throw .backend(error) }
            capacity.store(bytes)
            do { try writeCapacity(bytes, writer) } catch {
                capacity.store(old)
                throw .config(error)
            }
        }
        do {
            try writer.injectConfigInterrupt()
            return ResizeOutcome(oldBytes: old, newBytes: bytes, interruptSent: true, interruptNote: nil)
        } catch {
            return ResizeOutcome(oldBytes: old, newBytes: bytes, interruptSent: false,
                                 interruptNote: "no config interrupt sent (\(error)): no driver is ready yet; it reads the new capacity when it binds")
        }
    }

    /// Writes `capacity` (little-endian, in 512-byte sectors) at offset 0 of virtio_blk_config.
    static func writeCapacity(_ bytes: UInt64, _ writer: any ConfigSpaceWriter) throws(VDUSEError) {
        let sectors = (bytes / BlkProtocol.sectorSize).littleEndian
        let field = withUnsafeBytes(of: sectors) { Array($0) }
        try writer.writeConfig(offset: 0, bytes: field)
    }
}

extension VDUSEBlockDevice {
    /// The capacity the device serves now (changes with `resize`).
    public var currentCapacityBytes: UInt64 { parameters.currentCapacityBytes }

    /// Resizes the running device (see `OnlineResize`). Call from one thread at a time.
    public func resize(to bytes: UInt64, allowShrink: Bool) throws(ResizeError) -> ResizeOutcome {
        guard let cell = parameters.liveCapacity else { throw .notRunning }
        let outcome = try OnlineResize.perform(to: bytes, allowShrink: allowShrink, blockSize: parameters.blockSize,
                                               capacity: cell, backend: model.backend, writer: device.configWriter)
        let note = outcome.interruptNote.map { "; \($0)" } ?? ""
        logger.notice("resized \(name) from \(outcome.oldBytes) to \(outcome.newBytes) bytes\(note)")
        return outcome
    }
}
