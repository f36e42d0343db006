import SystemSupport
import Glibc

/// Failures of the VDUSE control path, each with the one-line message a user sees.
public enum VDUSEError: Error, Equatable, CustomStringConvertible {
    case noControlDevice
    case notRoot
    case nameTaken(String)
    case badName(String)
    case noSuchDevice(String)
    case busy(String)
    /// An ioctl or other system call failed.
    case system(SyscallError)
    case attach(String)

    public var description: String {
        switch self {
        case .noControlDevice:
            return "/dev/vduse/control not found: load the module with `modprobe vduse` (needs a kernel with VDUSE)"
        case .notRoot: return "permission denied on /dev/vduse: run as root"
        case .nameTaken(let n): return "a VDUSE device named \(n) already exists"
        case .badName(let n): return "invalid device name '\(n)': 1-63 characters of [A-Za-z0-9._-]"
        case .noSuchDevice(let n): return "no VDUSE device named \(n)"
        case .busy(let n): return "device \(n) is in use (attached to vdpa or opened by a running daemon)"
        case .system(let s): return "\(s.call) failed: \(String(cString: strerror(s.errno.rawValue)))"
        case .attach(let s): return s
        }
    }
}

extension VDUSEError {
    /// A failed ioctl or system call named `what`, by its errno.
    public static func ioctl(what: String, errno: Int32) -> VDUSEError { .system(SyscallError(call: what, errno: errno)) }
}
