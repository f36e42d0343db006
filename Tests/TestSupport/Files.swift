import Foundation
import Glibc

/// Writes a file of `bytes`, creating or replacing it.
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The whole content of a file.
public func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// The bytes of a file in a range, read directly (bypassing every backend).
public func fileBytes(_ path: String, offset: Int, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    precondition(fd >= 0, "open \(path)")
    defer { close(fd) }
    var out = [UInt8](repeating: 0xEE, count: count)
    let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    precondition(n == count, "short read of \(path)")
    return out
}

/// stat(2) of a path: (size, 512-byte blocks allocated).
public func statFile(_ path: String) -> (size: Int64, blocks: Int64) {
    var st = stat()
    precondition(stat(path, &st) == 0, "stat \(path)")
    return (Int64(st.st_size), Int64(st.st_blocks))
}
