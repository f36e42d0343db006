import BlockBackends
import SystemSupport
import Glibc

/// Everything that can go wrong with a zstd image, its overlay, or the tools
/// that make and check them. Each case names what is wrong and where, so the
/// CLI can print `description` as is. Data-path failures of the backend are
/// negated errnos instead (see `ZstdQueueBackend`).
public enum ImageError: Error, Equatable, CustomStringConvertible {
    /// A system call failed.
    /// A system call failed.
    case system(SyscallError)
    /// The file ends before a structure the format requires.
    case truncated(String)
    /// A magic number is not what the format puts there.
    case badMagic(what: String, expected: UInt32, found: UInt32)
    /// The seek table claims more bytes than the file holds.
    case seekTableOutOfBounds(String)
    /// The frame sizes in the seek table do not add up with the file or the header.
    case frameSizesInconsistent(String)
    /// A chunk declares or decompresses to more than the image's chunk size.
    case chunkTooLarge(chunk: Int, size: UInt64?, limit: UInt64)
    /// Data does not hash to the checksum stored for it.
    case checksumMismatch(what: String, expected: UInt64, actual: UInt64)
    /// A frame is not valid zstd (libzstd's reason).
    case corruptFrame(chunk: Int, reason: String)
    /// The image header is malformed or of an unknown version.
    case badHeader(String)
    /// A valid file this version cannot use.
    case unsupported(String)
    /// A caller-supplied option or argument is out of range.
    case invalidArgument(String)
    /// libzstd failed to compress.
    case compression(String)
    /// An overlay file does not belong to the base image it is opened with.
    case overlayMismatch(String)
    /// An overlay file is damaged (bad superblock, no intact allocation map).
    case overlayCorrupt(String)
    /// Another process holds the overlay.
    case overlayBusy(path: String)

    /// Another process holds the overlay.
    public var isOverlayBusy: Bool {
        if case .overlayBusy = self { return true }
        return false
    }

    /// A failed system call, as an image error.
    public init(_ error: SyscallError) { self = .system(error) }

    /// A failed system call named `what`, by its errno.
    public static func io(what: String, errno: Int32) -> ImageError { .system(SyscallError(call: what, errno: errno)) }

    public var description: String {
        switch self {
        case .system(let s): return s.message
        case .truncated(let s): return "truncated: \(s)"
        case .badMagic(let what, let expected, let found):
            return "bad magic in \(what): expected \(hex32(expected)), found \(hex32(found))"
        case .seekTableOutOfBounds(let s): return "seek table out of bounds: \(s)"
        case .frameSizesInconsistent(let s): return "frame sizes inconsistent with the file: \(s)"
        case .chunkTooLarge(let chunk, let size, let limit):
            let actual = size.map { "\($0) bytes" } ?? "more bytes"
            return "chunk \(chunk) is larger than declared: \(actual), at most \(limit) allowed"
        case .checksumMismatch(let what, let expected, let actual):
            return "checksum mismatch in \(what): stored \(hex64(expected)), computed \(hex64(actual))"
        case .corruptFrame(let chunk, let reason): return "chunk \(chunk) is not a valid zstd frame: \(reason)"
        case .badHeader(let s): return "bad image header: \(s)"
        case .unsupported(let s): return "unsupported: \(s)"
        case .invalidArgument(let s): return s
        case .compression(let s): return "compression failed: \(s)"
        case .overlayMismatch(let s): return "overlay does not match the base image: \(s)"
        case .overlayCorrupt(let s): return "overlay is damaged: \(s)"
        case .overlayBusy(let p): return "overlay \(p) is in use by another process"
        }
    }
}

public func hex32(_ v: UInt32) -> String { "0x" + String(v, radix: 16, uppercase: true) }
public func hex64(_ v: UInt64) -> String { "0x" + String(v, radix: 16, uppercase: true) }
