import BlockBackends
import Glibc

/// `ram:SIZE[,latency-us=N]`: a RAM disk written outside vduse-blk's
/// sources, to show the backend protocol (docs/backend-protocol.md).
struct RamDiskProvider: BackendProvider {
    var kinds: [String] { ["ram"] }

    func open(_ spec: BackendSpec, options: BackendOpenOptions) throws(BackendError) -> any BlockBackendFactory {
        let (sizeText, rest) = BackendSpec.splitOptions(spec.arguments)
        let size = try ByteSize.parse(sizeText)
        guard size > 0, size % 512 == 0, size <= 64 << 30 else { throw .badSize("ram: SIZE must be a multiple of 512, at most 64G") }
        var latency: UInt32 = 0
        for option in rest {
            guard let v = BackendSpec.value(of: option, key: "latency-us"), let n = UInt32(v), n <= 1_000_000 else {
                throw .invalidSpec("ram: unknown option '\(option)' (known: latency-us=0..1000000)")
            }
            latency = n
        }
        return try RamDisk(bytes: size, latencyMicros: latency, readOnly: options.readOnly)
    }
}

/// The disk: anonymous memory shared by every queue (like a real disk, what
/// concurrent writes to one sector leave is the driver's business).
final class RamDisk: BlockBackendFactory, @unchecked Sendable {
    let memory: UnsafeMutableRawPointer
    let geometry: BackendGeometry
    let latencyMicros: UInt32
    var summary: String { "ram: \(geometry.capacityBytes) bytes, \(latencyMicros) µs per op" }

    init(bytes: UInt64, latencyMicros: UInt32, readOnly: Bool) throws(BackendError) {
        guard let p = mmap(nil, Int(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              p != MAP_FAILED else { throw .io(what: "mmap \(bytes) bytes", errno: errno) }
        memory = p
        self.latencyMicros = latencyMicros
        geometry = BackendGeometry(capacityBytes: bytes, readOnly: readOnly, supportsDiscard: !readOnly,
                                   supportsWriteZeroes: !readOnly)
    }

    deinit { munmap(memory, Int(geometry.capacityBytes)) }

    func makeQueueBackend(queueIndex: Int, depth: Int) throws(BackendError) -> any QueueBackend {
        RamDiskQueue(disk: self, depth: depth)
    }
}

/// One queue's handle: every op runs when prepared (after the latency knob's
/// sleep) and completes at `submit()`; allocates nothing per op.
final class RamDiskQueue: QueueBackend {
    let disk: RamDisk
    let completions: CompletionRing
    var completionFD: Int32 { -1 }
    var capacity: Int { completions.capacity }
    var inFlight: Int { completions.count }

    init(disk: RamDisk, depth: Int) {
        self.disk = disk
        completions = CompletionRing(capacity: depth)
    }

    /// Validates `[offset, offset + length)`, waits out the latency, runs
    /// `body` and completes with the byte count (or 0 for zeroing).
    private func run(_ tag: UInt32, _ offset: UInt64, _ length: UInt64, writes: Bool, zeroing: Bool = false,
                     _ body: () -> Void) {
        let g = disk.geometry
        guard offset <= g.capacityBytes, length <= g.capacityBytes - offset else { return completions.push(tag: tag, result: -EIO) }
        guard !(writes && g.readOnly) else { return completions.push(tag: tag, result: -EBADF) }
        if disk.latencyMicros > 0 { usleep(disk.latencyMicros) }
        body()
        completions.push(tag: tag, result: zeroing ? 0 : Int32(clamping: length))
    }

    private func copy(_ offset: UInt64, _ iovecs: UnsafePointer<iovec>, _ count: Int, tag: UInt32, toDisk: Bool) {
        var total: UInt64 = 0
        for i in 0..<count { total += UInt64(iovecs[i].iov_len) }
        run(tag, offset, total, writes: toDisk) {
            var at = disk.memory + Int(offset)
            for i in 0..<count where iovecs[i].iov_len > 0 {
                let n = iovecs[i].iov_len, buffer = iovecs[i].iov_base!
                if toDisk { memcpy(at, buffer, n) } else { memcpy(buffer, at, n) }
                at += n
            }
        }
    }

    func prepareRead(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        copy(offset, iovecs, count, tag: tag, toDisk: false)
    }
    func prepareWrite(offset: UInt64, iovecs: UnsafePointer<iovec>, count: Int, tag: UInt32) {
        copy(offset, iovecs, count, tag: tag, toDisk: true)
    }
    func prepareFlush(tag: UInt32) { completions.push(tag: tag, result: 0) }
    func prepareDiscard(offset: UInt64, length: UInt64, tag: UInt32) {
        prepareWriteZeroes(offset: offset, length: length, unmap: true, tag: tag)
    }
    func prepareWriteZeroes(offset: UInt64, length: UInt64, unmap: Bool, tag: UInt32) {
        run(tag, offset, length, writes: true, zeroing: true) { memset(disk.memory + Int(offset), 0, Int(length)) }
    }
    func submit() { completions.publish() }
    func reap(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int { completions.pop(into: buffer) }
}
