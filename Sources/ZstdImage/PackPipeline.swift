import ImageOverlay
import SystemSupport

/// The compression side of a pack: worker threads claim chunks in order,
/// read, hash and compress each into a slot of a ring, and the writer takes
/// finished slots strictly in chunk order. A worker may run at most
/// `ringSize` chunks ahead of the writer. The ring and the counters are
/// guarded by `monitor`; slot `k % ringSize` belongs to the worker that
/// claimed chunk `k` until it is marked ready, then to the writer until the
/// writer moves past it. Hence `@unchecked Sendable`.
final class PackPipeline: @unchecked Sendable {
    /// One compressed chunk on its way to the writer.
    struct Slot {
        var frame: UnsafeMutableRawPointer
        var length = 0
        var hash: UInt64 = 0
        var zero = false
    }

    let input: PosixFile
    let logicalSize: UInt64
    let chunkSize: Int
    let chunkCount: Int
    let level: Int32
    let ringSize: Int
    let frameCapacity: Int
    private let slots: UnsafeMutablePointer<Slot>
    private let monitor = Monitor()
    // Guarded by `monitor`.
    private var next = 0
    private var written = 0
    private var ready: [Bool]
    private var failure: ImageError?

    init(input: PosixFile, logicalSize: UInt64, options: PackOptions) {
        self.input = input
        self.logicalSize = logicalSize
        chunkSize = options.chunkSize
        chunkCount = Int((logicalSize + UInt64(chunkSize) - 1) / UInt64(chunkSize))
        level = options.level
        frameCapacity = ImageLayout.maxFrameSize(chunkSize: chunkSize)
        // Enough slots to keep every thread busy while the writer catches up,
        // within about 256 MiB of compressed-frame buffers.
        let byMemory = max(2, (256 << 20) / frameCapacity)
        ringSize = max(2, min(options.threads * 8, byMemory, max(chunkCount, 1)))
        slots = .allocate(capacity: ringSize)
        for i in 0..<ringSize {
            (slots + i).initialize(to: Slot(frame: .allocate(byteCount: frameCapacity, alignment: 64)))
        }
        ready = Array(repeating: false, count: ringSize)
    }

    deinit {
        for i in 0..<ringSize { slots[i].frame.deallocate() }
        slots.deinitialize(count: ringSize)
        slots.deallocate()
    }

    func chunkLength(_ k: Int) -> Int {
        Int(min(UInt64(chunkSize), logicalSize - UInt64(k) * UInt64(chunkSize)))
    }

    /// Stops everyone with `error` (the first one wins).
    func fail(_ error: ImageError) {
        monitor.withLock {
            if failure == nil { failure = error }
            monitor.broadcast()
        }
    }

    /// A worker thread's whole life.
    func work() {
        let compressor: FrameCompressor
        do { compressor = try FrameCompressor(level: level) } catch {
            fail(error)
            return
        }
        let input = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 64)
        defer { input.deallocate() }
        var zeroFrames: [Int: (frame: [UInt8], hash: UInt64)] = [:]
        while true {
            monitor.lock()
            while next < chunkCount && next >= written + ringSize && failure == nil { monitor.wait() }
            if next >= chunkCount || failure != nil {
                monitor.unlock()
                return
            }
            let k = next
            next += 1
            monitor.unlock()
            do throws(ImageError) {
                let length = chunkLength(k)
                try self.input.read(into: input, count: length, at: UInt64(k) * UInt64(chunkSize))
                var slot = slots[k % ringSize]
                if isAllZero(input, length) {
                    let canned: (frame: [UInt8], hash: UInt64)
                    if let known = zeroFrames[length] {
                        canned = known
                    } else {
                        let size = try compressor.compress(input, count: length, into: slot.frame, capacity: frameCapacity)
                        canned = (Array(UnsafeRawBufferPointer(start: slot.frame, count: size)),
                                  XXH64.hash(UnsafeRawBufferPointer(start: input, count: length)))
                        zeroFrames[length] = canned
                    }
                    canned.frame.withUnsafeBytes { slot.frame.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    slot.length = canned.frame.count
                    slot.hash = canned.hash
                    slot.zero = true
                } else {
                    slot.hash = XXH64.hash(UnsafeRawBufferPointer(start: input, count: length))
                    slot.length = try compressor.compress(input, count: length, into: slot.frame, capacity: frameCapacity)
                    slot.zero = false
                }
                slots[k % ringSize] = slot
            } catch {
                fail(error)
                return
            }
            monitor.withLock {
                ready[k % ringSize] = true
                monitor.broadcast()
            }
        }
    }

    /// Waits for chunk `k` (the writer's next) and returns its slot, or throws
    /// the first worker failure.
    func take(_ k: Int) throws(ImageError) -> Slot {
        monitor.lock()
        defer { monitor.unlock() }
        while !ready[k % ringSize] && failure == nil { monitor.wait() }
        if let failure { throw failure }
        return slots[k % ringSize]
    }

    /// The writer is done with chunk `k`: its slot may be reused.
    func release(_ k: Int) {
        monitor.withLock {
            ready[k % ringSize] = false
            written = k + 1
            monitor.broadcast()
        }
    }
}

/// Whether `count` bytes at `p` are all zero.
func isAllZero(_ p: UnsafeRawPointer, _ count: Int) -> Bool {
    var i = 0
    while i + 32 <= count {
        let a = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        let b = p.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
        let c = p.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)
        let d = p.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)
        if (a | b | c | d) != 0 { return false }
        i += 32
    }
    while i < count {
        if p.load(fromByteOffset: i, as: UInt8.self) != 0 { return false }
        i += 1
    }
    return true
}
