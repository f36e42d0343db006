import Glibc
import SystemPackage

/// A failed system call: its name and the `Errno` it reported.
public struct SyscallError: Error, Equatable, CustomStringConvertible {
    public var call: String
    public var errno: Errno

    public init(call: String, errno: Errno) {
        self.call = call
        self.errno = errno
    }

    /// The negated errno, as data-path completions carry it.
    public var negated: Int32 { -errno.rawValue }

    /// From a raw errno value.
    public init(call: String, errno code: Int32) {
        self.init(call: call, errno: Errno(rawValue: code))
    }

    public var description: String { "\(call): \(errno)" }

    /// "CALL: strerror(errno)", as the error types that wrap this print it.
    public var message: String { "\(call): \(String(cString: strerror(errno.rawValue)))" }
}

/// Runs `body`, a libc call that returns a negative value and sets `errno`
/// on failure (or, with `returnsNegatedErrno`, one that returns `-errno`
/// itself, like the C shims), retrying while it fails with `EINTR`.
@inlinable
public func sysCall<T: FixedWidthInteger & SignedInteger>(
    _ call: String, returnsNegatedErrno: Bool = false, _ body: () -> T
) throws(SyscallError) -> T {
    let result = sysCallResult(returnsNegatedErrno: returnsNegatedErrno, body)
    if result >= 0 { return result }
    throw SyscallError(call: call, errno: Errno(rawValue: Int32(truncatingIfNeeded: -result)))
}

/// Like `sysCall`, for paths that must not throw (the data path, deinit,
/// cleanup): the call's result, or the negated errno it failed with.
/// Retries while it fails with `EINTR`.
@inlinable
public func sysCallResult<T: FixedWidthInteger & SignedInteger>(
    returnsNegatedErrno: Bool = false, _ body: () -> T
) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code: Int32 = returnsNegatedErrno ? Int32(truncatingIfNeeded: -result) : Glibc.errno
        if code == EINTR { continue }
        return T(-Int64(code))
    }
}
