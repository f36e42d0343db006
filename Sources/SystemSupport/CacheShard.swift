import Glibc

/// One shard of the chunk cache: up to `capacity` decompressed chunks with an
/// LRU list, behind one pthread mutex. Every field below `lock` is guarded by
/// it; chunk buffers are owned by the shard until handed back by `insert`.
/// Hence `@unchecked Sendable`.
public final class CacheShard: @unchecked Sendable {
    public let capacity: Int
    public let chunkSize: Int
    private let lock = Monitor()
    private var slotOf: [Int: Int32]
    private let keys: UnsafeMutablePointer<Int>
    private let prev: UnsafeMutablePointer<Int32>
    private let next: UnsafeMutablePointer<Int32>
    private let buffers: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Most and least recently used slots (-1: none).
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var used = 0
    /// Counters (guarded too): lookups that hit and missed.
    private(set) var hits = 0
    private(set) var misses = 0

    public init(capacity: Int, chunkSize: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.chunkSize = chunkSize
        slotOf = Dictionary(minimumCapacity: capacity)
        keys = .allocate(capacity: capacity)
        keys.initialize(repeating: -1, count: capacity)
        prev = .allocate(capacity: capacity)
        prev.initialize(repeating: -1, count: capacity)
        next = .allocate(capacity: capacity)
        next.initialize(repeating: -1, count: capacity)
        buffers = .allocate(capacity: capacity)
        buffers.initialize(repeating: nil, count: capacity)
    }

    deinit {
        for i in 0..<capacity { buffers[i]?.deallocate() }
        keys.deallocate()
        prev.deallocate()
        next.deallocate()
        buffers.deallocate()
    }

    /// Runs `body` on chunk `index`'s bytes under the shard lock if cached
    /// (marking it most recently used); false on a miss.
    @inline(__always)
    public func withChunk(_ index: Int, _ body: (UnsafeRawPointer) -> Void) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let slot = slotOf[index], let buffer = buffers[Int(slot)] else {
            misses += 1
            return false
        }
        hits += 1
        touch(slot)
        body(UnsafeRawPointer(buffer))
        return true
    }

    /// Whether chunk `index` is cached (no LRU update).
    public func contains(_ index: Int) -> Bool {
        lock.withLock { slotOf[index] != nil }
    }

    /// Caches `buffer` (holding chunk `index`, `chunkSize` bytes of room) by
    /// swapping it with the buffer of the evicted slot, or with a fresh one
    /// while the shard is filling; `buffer` is left untouched if the chunk is
    /// already cached. The caller keeps whatever `buffer` points to afterwards.
    public func insert(_ index: Int, buffer: inout UnsafeMutableRawPointer) {
        lock.lock()
        if let slot = slotOf[index] {
            touch(slot)
            lock.unlock()
            return
        }
        let slot: Int32
        var replacement: UnsafeMutableRawPointer?
        if used < capacity {
            slot = Int32(used)
            used += 1
        } else {
            slot = tail
            unlink(slot)
            slotOf[keys[Int(slot)]] = nil
            replacement = buffers[Int(slot)]
        }
        keys[Int(slot)] = index
        buffers[Int(slot)] = buffer
        slotOf[index] = slot
        linkFront(slot)
        lock.unlock()
        // A fresh buffer for the caller only while the shard is filling.
        buffer = replacement ?? .allocate(byteCount: chunkSize, alignment: 4096)
    }

    /// Forgets chunk `index` (bad data): its slot becomes the next one evicted.
    public func remove(_ index: Int) {
        lock.withLock {
            guard let slot = slotOf[index] else { return }
            slotOf[index] = nil
            keys[Int(slot)] = -1
            unlink(slot)
            linkBack(slot)
        }
    }

    /// (hits, misses, chunks held).
    public func statistics() -> (hits: Int, misses: Int, held: Int) {
        lock.withLock { (hits, misses, used) }
    }

    @inline(__always)
    private func touch(_ slot: Int32) {
        guard head != slot else { return }
        unlink(slot)
        linkFront(slot)
    }

    private func unlink(_ slot: Int32) {
        let p = prev[Int(slot)], n = next[Int(slot)]
        if p >= 0 { next[Int(p)] = n } else { head = n }
        if n >= 0 { prev[Int(n)] = p } else { tail = p }
        prev[Int(slot)] = -1
        next[Int(slot)] = -1
    }

    private func linkBack(_ slot: Int32) {
        next[Int(slot)] = -1
        prev[Int(slot)] = tail
        if tail >= 0 { next[Int(tail)] = slot }
        tail = slot
        if head < 0 { head = slot }
    }

    private func linkFront(_ slot: Int32) {
        prev[Int(slot)] = -1
        next[Int(slot)] = head
        if head >= 0 { prev[Int(head)] = slot }
        head = slot
        if tail < 0 { tail = slot }
    }
}
