import BlockBackends
import Glibc

/// A backend that stores nothing and answers each kind of op with a fixed
/// result chosen by the test: a negative errno to fail it (ENOSPC on writes,
/// EIO on flush...), or nil for success (reads and writes report their byte
/// count). Completions are ready right after `submit()` (completionFD -1).
public struct FaultyBackendFactory: BlockBackendFactory {
    public enum Op: Hashable, Sendable { case read, write, flush, discard, writeZeroes }

    public let geometry: BackendGeometry
    public let failures: [Op: Int32]
    public var summary: String { "faulty:\(geometry.capacityBytes)" }

    public init(capacityBytes: UInt64 = 16 << 20, failures: [Op: Int32]) {
        geometry = BackendGeometry(capacityBytes: capacityBytes, readOnly: false, supportsDiscard: true,
                                   supportsWriteZeroes: true)
        self.failures = failures
    }

    public func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        FaultyQueueBackend(failures: failures, depth: depth)
    }
}

final class FaultyQueueBackend: QueueBackend {
    let completionFD: Int32 = -1
    let capacity: Int
    let failures: [FaultyBackendFactory.Op: Int32]
    var prepared: [IOCompletion] = []
    var ready: [IOCompletion] = []
    var inFlight: Int { prepared.count + ready.count }

    init(failures: [FaultyBackendFactory.Op: Int32], depth: Int) {
        self.failures = failures
        capacity = depth
    }

    func push(_ op: FaultyBackendFactory.Op, tag: UInt32, ok: Int32) {
        prepared.append(IOCompletion(tag: tag, result: failures[op] ?? ok))
    }

    static func bytes(_ iovecs: UnsafePointer<iovec>, _ count: Int) -> Int32 {
        Int32((0..<count).reduce(0) { $0 + iovecs[$1].iov_len })
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        push(.read, tag: tag, ok: Self.bytes(iovecs, count))
    }
    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        push(.write, tag: tag, ok: Self.bytes(iovecs, count))
    }
    func prepareFlush(tag: UInt32) { push(.flush, tag: tag, ok: 0) }
    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) { push(.discard, tag: tag, ok: 0) }
    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) { push(.writeZeroes, tag: tag, ok: 0) }

    func submit() {
        ready += prepared
        prepared = []
    }

    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        let n = min(buffer.count, ready.count)
        for i in 0..<n { buffer[i] = ready[i] }
        ready.removeFirst(n)
        return n
    }
}
