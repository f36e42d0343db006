import BlockBackends
import Glibc
import SystemSupport
import XCTest

// Drives a `QueueBackend` the way a queue thread does: prepare, submit, reap;
// while nothing can be reaped, sleep on `completionFD` (and drain that
// eventfd, which the backend leaves to its caller) when it is >= 0. A
// backend with `completionFD == -1` must have every completion ready right
// after `submit()`, so finding none is a failure, not a reason to wait.

/// Reaps at least one and at most `batch` completions, waiting for them up to
/// `timeout` seconds: empty (after an XCTest failure) when none came.
public func reapSome(_ backend: any QueueBackend, batch: Int = 256, timeout: Double = 10,
                     file: StaticString = #filePath, line: UInt = #line) -> [IOCompletion] {
    let buffer = UnsafeMutableBufferPointer<IOCompletion>.allocate(capacity: max(batch, 1))
    defer { buffer.deallocate() }
    let deadline = monotonicSeconds() + timeout
    while true {
        let n = backend.reap(into: buffer)
        XCTAssertLessThanOrEqual(n, buffer.count, "reap overfilled its buffer", file: file, line: line)
        if n > 0 { return Array(buffer[0..<n]) }
        let left = deadline - monotonicSeconds()
        guard left > 0 else {
            XCTFail("no completion within \(timeout) s (\(backend.inFlight) in flight)", file: file, line: line)
            return []
        }
        guard backend.completionFD >= 0 else {
            XCTFail("synchronous backend has no completion after submit", file: file, line: line)
            return []
        }
        var pfd = pollfd(fd: backend.completionFD, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, Int32(min(left, 0.05) * 1000) + 1) > 0 {
            var value: UInt64 = 0
            _ = read(backend.completionFD, &value, 8)
        }
    }
}

/// Collects exactly `count` completions, `reapBatch` at most per reap.
public func waitFor(_ backend: any QueueBackend, count: Int, reapBatch: Int = 256, timeout: Double = 10,
                    file: StaticString = #filePath, line: UInt = #line) -> [IOCompletion] {
    var collected: [IOCompletion] = []
    let deadline = monotonicSeconds() + timeout
    while collected.count < count {
        let left = deadline - monotonicSeconds()
        let got = left > 0 ? reapSome(backend, batch: min(reapBatch, count - collected.count), timeout: left,
                                      file: file, line: line) : []
        if got.isEmpty { break }
        collected += got
    }
    XCTAssertEqual(collected.count, count, "completions", file: file, line: line)
    return collected
}

/// Submits what was prepared and collects exactly `count` completions.
public func submitAndWait(_ backend: any QueueBackend, count: Int, reapBatch: Int = 256, timeout: Double = 10,
                          file: StaticString = #filePath, line: UInt = #line) -> [IOCompletion] {
    backend.submit()
    return waitFor(backend, count: count, reapBatch: reapBatch, timeout: timeout, file: file, line: line)
}

/// Runs the one op `prepare` prepares and returns its result.
public func runOne(_ backend: any QueueBackend, file: StaticString = #filePath, line: UInt = #line,
                   _ prepare: (any QueueBackend) -> Void) -> Int32 {
    prepare(backend)
    let done = submitAndWait(backend, count: 1, file: file, line: line)
    return done.first?.result ?? Int32.min
}

/// Writes all of `buffer` at `offset`: the result.
public func writeOp(_ backend: any QueueBackend, _ buffer: AlignedBuffer, at offset: UInt64, tag: UInt32 = 1,
                    file: StaticString = #filePath, line: UInt = #line) -> Int32 {
    var iov = buffer.iovec()
    return runOne(backend, file: file, line: line) { $0.prepareWrite(offset: offset, iovecs: &iov, count: 1, tag: tag) }
}

/// Reads all of `buffer` from `offset`: the result.
public func readOp(_ backend: any QueueBackend, _ buffer: AlignedBuffer, at offset: UInt64, tag: UInt32 = 1,
                   file: StaticString = #filePath, line: UInt = #line) -> Int32 {
    var iov = buffer.iovec()
    return runOne(backend, file: file, line: line) { $0.prepareRead(offset: offset, iovecs: &iov, count: 1, tag: tag) }
}

/// One queue handle driven one op at a time with fresh tags (each op must
/// complete exactly once, with its own tag). Owns the buffers of its ops.
/// Reads scatter into four iovecs (one empty), writes gather from two, to
/// exercise the backends' iovec walking.
public final class QueueDriver {
    public let queue: any QueueBackend
    /// Seconds an op may take before the test fails.
    public var timeout: Double
    private var nextTag: UInt32 = 1

    public init(_ queue: any QueueBackend, timeout: Double = 60) {
        self.queue = queue
        self.timeout = timeout
    }

    public convenience init(_ factory: any BlockBackendFactory, queueIndex: Int = 0, depth: Int = 16,
                            timeout: Double = 60) throws {
        self.init(try factory.makeQueueBackend(queueIndex: queueIndex, depth: depth), timeout: timeout)
    }

    /// A tag not used by this driver before.
    public func takeTag() -> UInt32 {
        defer { nextTag &+= 1 }
        return nextTag
    }

    /// Prepares one op with a fresh tag, submits it and waits for it: its result.
    public func run(timeout: Double? = nil, file: StaticString = #filePath, line: UInt = #line,
                    _ prepare: (any QueueBackend, UInt32) -> Void) -> Int32 {
        let tag = takeTag()
        prepare(queue, tag)
        let done = submitAndWait(queue, count: 1, timeout: timeout ?? self.timeout, file: file, line: line)
        guard let first = done.first else { return Int32.min }
        XCTAssertEqual(first.tag, tag, "completion tag", file: file, line: line)
        return first.result
    }

    /// Reads `length` bytes at `offset`: the result and the bytes (0xAA where nothing was read).
    public func read(_ offset: UInt64, _ length: Int, timeout: Double? = nil,
                     file: StaticString = #filePath, line: UInt = #line) -> (result: Int32, bytes: [UInt8]) {
        var out = [UInt8](repeating: 0xAA, count: length)
        let result = out.withUnsafeMutableBytes { b -> Int32 in
            let base = b.baseAddress!
            let a = length / 3, c = length / 4
            var iov = [iovec(iov_base: base, iov_len: a), iovec(iov_base: base + a, iov_len: 0),
                       iovec(iov_base: base + a, iov_len: length - a - c), iovec(iov_base: base + length - c, iov_len: c)]
            return iov.withUnsafeMutableBufferPointer { v in
                run(timeout: timeout, file: file, line: line) {
                    $0.prepareRead(offset: offset, iovecs: v.baseAddress!, count: v.count, tag: $1)
                }
            }
        }
        return (result, out)
    }

    /// Writes `bytes` at `offset`: the result.
    public func write(_ offset: UInt64, _ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        var copy = bytes
        return copy.withUnsafeMutableBytes { b -> Int32 in
            let half = b.count / 2
            var iov = [iovec(iov_base: b.baseAddress!, iov_len: half),
                       iovec(iov_base: b.baseAddress! + half, iov_len: b.count - half)]
            return iov.withUnsafeMutableBufferPointer { v in
                run(file: file, line: line) {
                    $0.prepareWrite(offset: offset, iovecs: v.baseAddress!, count: v.count, tag: $1)
                }
            }
        }
    }

    public func flush(file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        run(file: file, line: line) { $0.prepareFlush(tag: $1) }
    }

    public func discard(_ offset: UInt64, _ length: UInt64, file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        run(file: file, line: line) { $0.prepareDiscard(offset: offset, length: length, tag: $1) }
    }

    public func writeZeroes(_ offset: UInt64, _ length: UInt64, unmap: Bool = false,
                            file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        run(file: file, line: line) { $0.prepareWriteZeroes(offset: offset, length: length, unmap: unmap, tag: $1) }
    }

    /// Issues several reads at once (one submit), then waits for all: results in order.
    public func readMany(_ extents: [(UInt64, Int)], timeout: Double? = nil,
                         file: StaticString = #filePath, line: UInt = #line) -> [(result: Int32, bytes: [UInt8])] {
        let raw = extents.map { UnsafeMutableRawPointer.allocate(byteCount: max(1, $0.1), alignment: 64) }
        defer { raw.forEach { $0.deallocate() } }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: max(1, extents.count))
        defer { iovs.deallocate() }
        var results = [Int32](repeating: Int32.min, count: extents.count)
        var tags: [UInt32: Int] = [:]
        for i in extents.indices {
            let tag = takeTag()
            tags[tag] = i
            iovs[i] = iovec(iov_base: raw[i], iov_len: extents[i].1)
            queue.prepareRead(offset: extents[i].0, iovecs: iovs + i, count: 1, tag: tag)
        }
        for c in submitAndWait(queue, count: extents.count, timeout: timeout ?? self.timeout, file: file, line: line) {
            guard let i = tags.removeValue(forKey: c.tag) else {
                XCTFail("unexpected or repeated tag \(c.tag)", file: file, line: line)
                continue
            }
            results[i] = c.result
        }
        return extents.indices.map { i in
            (results[i], Array(UnsafeRawBufferPointer(start: raw[i], count: extents[i].1)))
        }
    }
}
