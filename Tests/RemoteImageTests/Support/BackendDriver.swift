import ImageOverlay
import SystemSupport
import BlockBackends
import Glibc
import XCTest
import ZstdImage

/// Drives one `QueueBackend` the way a queue thread does (prepare, submit,
/// reap; sleep on `completionFD` while ops are outstanding) for tests.
/// Owns the buffers of the ops it issues.
final class BackendDriver {
    let backend: any QueueBackend
    private var nextTag: UInt32 = 1

    init(_ backend: any QueueBackend) { self.backend = backend }

    /// Reads `length` bytes at `offset`: (result, bytes).
    func read(_ offset: UInt64, _ length: Int, timeout: Double = 60) -> (Int32, [UInt8]) {
        var bytes = [UInt8](repeating: 0xEE, count: length)
        let rc = bytes.withUnsafeMutableBytes { b -> Int32 in
            var iov = iovec(iov_base: b.baseAddress, iov_len: length)
            let tag = nextTag
            nextTag &+= 1
            backend.prepareRead(offset: offset, iovecs: &iov, count: 1, tag: tag)
            backend.submit()
            return waitFor(tag, timeout: timeout)
        }
        return (rc, bytes)
    }

    /// Writes `bytes` at `offset`: the result.
    func write(_ offset: UInt64, _ bytes: [UInt8]) -> Int32 {
        var copy = bytes
        return copy.withUnsafeMutableBytes { b -> Int32 in
            var iov = iovec(iov_base: b.baseAddress, iov_len: b.count)
            let tag = nextTag
            nextTag &+= 1
            backend.prepareWrite(offset: offset, iovecs: &iov, count: 1, tag: tag)
            backend.submit()
            return waitFor(tag, timeout: 30)
        }
    }

    func flush() -> Int32 {
        let tag = nextTag
        nextTag &+= 1
        backend.prepareFlush(tag: tag)
        backend.submit()
        return waitFor(tag, timeout: 30)
    }

    /// Issues several reads at once (one submit), then waits for all: results in order.
    func readMany(_ extents: [(UInt64, Int)], timeout: Double = 60) -> [(Int32, [UInt8])] {
        let raw = extents.map { UnsafeMutableRawPointer.allocate(byteCount: max(1, $0.1), alignment: 64) }
        defer { raw.forEach { $0.deallocate() } }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: extents.count)
        defer { iovs.deallocate() }
        var results = [Int32](repeating: Int32.min, count: extents.count)
        let firstTag = nextTag
        for i in extents.indices {
            iovs[i] = iovec(iov_base: raw[i], iov_len: extents[i].1)
            backend.prepareRead(offset: extents[i].0, iovecs: iovs + i, count: 1, tag: firstTag + UInt32(i))
        }
        backend.submit()
        nextTag &+= UInt32(extents.count)
        let deadline = monotonic() + timeout
        var done = 0
        while done < extents.count, monotonic() < deadline {
            for c in reapSome() {
                let i = Int(c.tag &- firstTag)
                if i >= 0 && i < extents.count { results[i] = c.result; done += 1 }
            }
            if done < extents.count { sleepOnCompletion() }
        }
        XCTAssertEqual(done, extents.count, "reads still outstanding after \(timeout) s")
        return extents.indices.map { i in
            (results[i], Array(UnsafeRawBufferPointer(start: raw[i], count: extents[i].1)))
        }
    }

    private func waitFor(_ tag: UInt32, timeout: Double) -> Int32 {
        let deadline = monotonic() + timeout
        while monotonic() < deadline {
            for c in reapSome() where c.tag == tag { return c.result }
            sleepOnCompletion()
        }
        XCTFail("op \(tag) did not complete within \(timeout) s")
        return Int32.min
    }

    private func reapSome() -> [IOCompletion] {
        var out = [IOCompletion](repeating: IOCompletion(tag: 0, result: 0), count: 64)
        let n = out.withUnsafeMutableBufferPointer { backend.reap(into: $0) }
        return Array(out.prefix(n))
    }

    private func sleepOnCompletion() {
        let fd = backend.completionFD
        guard fd >= 0 else { return }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 50) > 0 {
            var v: UInt64 = 0
            _ = Glibc.read(fd, &v, 8)
        }
    }
}

/// Seconds on the monotonic clock (the project's clock, from ZstdImage).
func monotonic() -> Double { monotonicSeconds() }

/// A fresh temporary directory (removed by the caller's teardown).
func makeTempDirectory(_ label: String) -> String {
    var template = Array("/tmp/vb-\(label)-XXXXXX".utf8CString)
    return String(cString: mkdtemp(&template)!)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func patternBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        out[i] = UInt8(truncatingIfNeeded: x >> 24)
    }
    return out
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot create \(path)")
    _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
