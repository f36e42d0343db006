import Glibc
import SystemPackage

/// A failed system call: its name and the `Errno` it reported.
struct SyscallError: Error, Equatable, CustomStringConvertible {
    var call: String
    var errno: Errno

    /// The negated errno, as data-path completions carry it.
    var negated: Int32 { -errno.rawValue }

    var description: String { "\(call): \(errno)" }
}

/// Runs `body`, a libc call that returns a negative value and sets `errno`
/// on failure (or, with `returnsNegatedErrno`, one that returns `-errno`
/// itself, like the C shims), retrying while it fails with `EINTR`.
@inline(__always)
func sysCall<T: FixedWidthInteger & SignedInteger>(
    _ call: String, returnsNegatedErrno: Bool = false, _ body: () -> T
) throws(SyscallError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code: Int32 = returnsNegatedErrno ? Int32(truncatingIfNeeded: -result) : Glibc.errno
        if code == EINTR { continue }
        throw SyscallError(call: call, errno: Errno(rawValue: code))
    }
}
