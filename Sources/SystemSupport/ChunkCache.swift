/// A bounded LRU cache of decompressed chunks shared by every queue of a
/// device. Sharded by chunk index (consecutive chunks land in different
/// shards), one small lock per shard and no global lock; the LRU order is per
/// shard. Holds at most `capacityBytes / chunkSize` chunks (at least one per
/// shard), allocated as the cache fills and reused by eviction afterwards.
public final class ChunkCache: Sendable {
    public let chunkSize: Int
    /// Chunks the cache can hold.
    public let capacityChunks: Int
    private let shards: [CacheShard]

    /// A cache of about `capacityBytes`; nil when that is less than one chunk.
    public init?(capacityBytes: UInt64, chunkSize: Int, shardCount: Int = 16) {
        let chunks = Int(min(capacityBytes / UInt64(chunkSize), UInt64(Int32.max)))
        guard chunks > 0 else { return nil }
        let count = max(1, min(shardCount, chunks))
        self.chunkSize = chunkSize
        capacityChunks = (chunks / count) * count
        shards = (0..<count).map { _ in CacheShard(capacity: chunks / count, chunkSize: chunkSize) }
    }

    @inline(__always)
    private func shard(_ index: Int) -> CacheShard { shards[index % shards.count] }

    /// Runs `body` on the cached bytes of chunk `index` (under its shard's
    /// lock: keep it short, a copy); false on a miss.
    @inline(__always)
    public func withChunk(_ index: Int, _ body: (UnsafeRawPointer) -> Void) -> Bool {
        shard(index).withChunk(index, body)
    }

    /// Whether chunk `index` is cached.
    public func contains(_ index: Int) -> Bool { shard(index).contains(index) }

    /// Gives the cache `buffer` (holding chunk `index`) and gets back a buffer
    /// of `chunkSize` bytes to reuse: see `CacheShard.insert`.
    public func insert(_ index: Int, buffer: inout UnsafeMutableRawPointer) {
        shard(index).insert(index, buffer: &buffer)
    }

    /// Drops chunk `index` if cached (its bytes were found bad).
    public func remove(_ index: Int) { shard(index).remove(index) }

    /// Totals over all shards.
    public func statistics() -> (hits: Int, misses: Int, held: Int) {
        var total = (hits: 0, misses: 0, held: 0)
        for s in shards {
            let t = s.statistics()
            total.hits += t.hits
            total.misses += t.misses
            total.held += t.held
        }
        return total
    }
}
