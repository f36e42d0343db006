/// The eviction policy of a bounded disk tier (`cache-size=`): how many
/// chunks the data file may hold (the high watermark, the budget itself),
/// how far one eviction batch goes down (the low watermark, 90% of it, so a
/// batch costs one metadata write for a tenth of the budget), and a
/// least-recently-used list of the chunks present on disk. Recency counts
/// disk-tier reads and stores (chunks the memory tier serves are not touched
/// on disk, so the hot path stays off this lock). The list is intrusive: two
/// Int32 arrays indexed by chunk, allocated once, so touching, unlinking and
/// popping are O(1) and allocate nothing. Not synchronised: it lives inside
/// `DiskChunkCache`'s state and is used under that lock.
struct DiskCacheBudget {
    /// Chunks the data file may hold; a store that would pass it evicts first.
    let highChunks: Int
    /// Chunks left after an eviction batch (below `highChunks`).
    let lowChunks: Int
    private var prev: [Int32]
    private var next: [Int32]
    /// Most and least recently used chunks (-1: empty list).
    private var head: Int32 = -1
    private var tail: Int32 = -1
    /// Chunks on the list.
    private(set) var count = 0
    /// `prev` value of a chunk that is not on the list.
    private static let unlinked: Int32 = -2

    /// The watermarks for a budget of `budgetBytes` in chunks of `chunkSize`
    /// bytes (at least 2 chunks: checked by the caller).
    init(budgetBytes: UInt64, chunkSize: Int, chunkCount: Int) {
        let high = Int(min(budgetBytes / UInt64(chunkSize), UInt64(Int32.max)))
        highChunks = high
        lowChunks = max(1, high - max(1, high / 10))
        prev = [Int32](repeating: Self.unlinked, count: chunkCount)
        next = [Int32](repeating: -1, count: chunkCount)
    }

    func contains(_ chunk: Int) -> Bool { prev[chunk] != Self.unlinked }

    /// Marks `chunk` most recently used (linking it if it was not on the list).
    mutating func touch(_ chunk: Int) {
        if contains(chunk) {
            guard head != Int32(chunk) else { return }
            unlink(chunk)
        }
        let c = Int32(chunk)
        prev[chunk] = -1
        next[chunk] = head
        if head >= 0 { prev[Int(head)] = c }
        head = c
        if tail < 0 { tail = c }
        count += 1
    }

    /// Takes `chunk` off the list (no-op when it is not on it).
    mutating func remove(_ chunk: Int) {
        if contains(chunk) { unlink(chunk) }
    }

    /// Takes the least recently used chunk off the list.
    mutating func popLeastRecent() -> Int? {
        guard tail >= 0 else { return nil }
        let chunk = Int(tail)
        unlink(chunk)
        return chunk
    }

    private mutating func unlink(_ chunk: Int) {
        let p = prev[chunk], n = next[chunk]
        if p >= 0 { next[Int(p)] = n } else { head = n }
        if n >= 0 { prev[Int(n)] = p } else { tail = p }
        prev[chunk] = Self.unlinked
        next[chunk] = -1
        count -= 1
    }
}
