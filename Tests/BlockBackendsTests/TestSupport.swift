import Foundation
import Glibc
import XCTest
@testable import BlockBackends

/// A fresh directory under `parent`, removed with everything in it on deinit.
final class TempDir {
    let path: String

    init(parent: String = NSTemporaryDirectory()) throws {
        let parent = parent.hasSuffix("/") ? String(parent.dropLast()) : parent
        var template = Array((parent + "/vb-backends-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw NSError(domain: NSPOSIXErrorDomain, code: Int(errno))
        }
        path = String(cString: made)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    func file(_ name: String) -> String { path + "/" + name }
}

/// Page-aligned memory (usable with O_DIRECT), freed on deinit.
final class AlignedBuffer {
    let base: UnsafeMutableRawPointer
    let count: Int

    init(count: Int, fill: UInt8 = 0) {
        var memory: UnsafeMutableRawPointer?
        precondition(posix_memalign(&memory, 4096, max(count, 1)) == 0)
        base = memory!
        self.count = count
        memset(base, Int32(fill), count)
    }

    deinit { free(base) }

    var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    func set(_ values: [UInt8]) {
        precondition(values.count == count)
        values.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    /// An iovec for `[offset, offset + length)` of this buffer.
    func iovec(_ offset: Int = 0, _ length: Int? = nil) -> Glibc.iovec {
        Glibc.iovec(iov_base: base + offset, iov_len: length ?? (count - offset))
    }
}

/// A deterministic byte pattern that differs per `seed`.
func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ ($0 >> 9)) | 1 }
}

/// Submits what was prepared and collects exactly `count` completions,
/// polling `completionFD` when the backend has one. Fails after `timeout`.
func submitAndWait(_ backend: any QueueBackend, count: Int, reapBatch: Int = 256,
                   timeout: TimeInterval = 10, file: StaticString = #filePath,
                   line: UInt = #line) -> [IOCompletion] {
    backend.submit()
    return waitFor(backend, count: count, reapBatch: reapBatch, timeout: timeout, file: file, line: line)
}

func waitFor(_ backend: any QueueBackend, count: Int, reapBatch: Int = 256, timeout: TimeInterval = 10,
             file: StaticString = #filePath, line: UInt = #line) -> [IOCompletion] {
    var collected: [IOCompletion] = []
    let buffer = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: reapBatch)
    defer { buffer.deallocate() }
    let deadline = Date().addingTimeInterval(timeout)
    while collected.count < count {
        let n = backend.reap(into: buffer)
        collected.append(contentsOf: buffer[0..<n])
        if collected.count >= count { break }
        if Date() > deadline {
            XCTFail("timed out with \(collected.count) of \(count) completions", file: file, line: line)
            break
        }
        if n == 0 {
            if backend.completionFD >= 0 {
                var pfd = pollfd(fd: backend.completionFD, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, 1000) > 0 {
                    // The caller drains the eventfd (the backend does not).
                    var value: UInt64 = 0
                    _ = read(backend.completionFD, &value, 8)
                }
            } else {
                XCTFail("synchronous backend has no completion after submit", file: file, line: line)
                break
            }
        }
    }
    XCTAssertEqual(collected.count, count, "completions", file: file, line: line)
    return collected
}

/// Runs one op and returns its result.
func runOne(_ backend: any QueueBackend, file: StaticString = #filePath, line: UInt = #line,
            _ prepare: (any QueueBackend) -> Void) -> Int32 {
    prepare(backend)
    let done = submitAndWait(backend, count: 1, file: file, line: line)
    return done.first?.result ?? Int32.min
}

func writeOp(_ backend: any QueueBackend, _ buffer: AlignedBuffer, at offset: UInt64, tag: UInt32 = 1) -> Int32 {
    var iov = buffer.iovec()
    return runOne(backend) { $0.prepareWrite(offset: offset, iovecs: &iov, count: 1, tag: tag) }
}

func readOp(_ backend: any QueueBackend, _ buffer: AlignedBuffer, at offset: UInt64, tag: UInt32 = 1) -> Int32 {
    var iov = buffer.iovec()
    return runOne(backend) { $0.prepareRead(offset: offset, iovecs: &iov, count: 1, tag: tag) }
}

/// stat(2) of a path: (size, 512-byte blocks allocated).
func statFile(_ path: String) -> (size: Int64, blocks: Int64) {
    var st = stat()
    precondition(stat(path, &st) == 0, "stat \(path)")
    return (Int64(st.st_size), Int64(st.st_blocks))
}

/// The bytes of a file in a range, read directly (bypassing every backend).
func fileBytes(_ path: String, offset: Int, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    precondition(fd >= 0)
    defer { close(fd) }
    var out = [UInt8](repeating: 0xEE, count: count)
    let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    precondition(n == count)
    return out
}

/// Writes a file of `bytes` (creating or replacing it).
func writeFile(_ path: String, _ bytes: [UInt8]) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
}
