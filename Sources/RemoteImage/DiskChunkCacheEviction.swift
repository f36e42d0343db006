import CSys
import Glibc
import Logging
import SystemSupport

/// Persisting and evicting for `DiskChunkCache`: every metadata write goes
/// through `commit`, which is also where a bounded cache evicts. The order
/// is what keeps the present-bitmap crash-safe:
///   1. fdatasync the data file (chunks written since the last commit);
///   2. under the state lock: mark those chunks present, pick the victims
///      (least recently used present chunks down to the low watermark, plus
///      chunks forgotten since) and clear their bits;
///   3. write the metadata atomically (tmp + fsync + rename + fsync dir);
///   4. only now punch the victims' blocks out (fallocate PUNCH_HOLE).
/// A crash before 3 leaves the victims present with their data intact; a
/// crash between 3 and 4 leaves absent chunks holding data, which the next
/// open punches out before counting on the budget.
extension DiskChunkCache {
    /// Bounded cache: makes room for one more chunk, evicting a batch when
    /// the data file would otherwise pass the budget. False when no room
    /// could be made (the chunk then stays off the disk tier).
    func makeRoom() -> Bool {
        guard let high = state.withLock({ $0.budget?.highChunks }) else { return true }
        if state.withLock({ $0.allocated < high }) { return true }
        do throws(RemoteError) { try commit(force: true, evict: true) } catch {
            logger.warning("disk cache eviction: \(error)")
        }
        return state.withLock { $0.allocated < high }
    }

    /// Chunks evicted since open.
    var evictedChunks: UInt64 { state.withLock { $0.evicted } }

    /// Bytes the data file occupies on disk (its st_blocks), or 0 if unknown.
    var allocatedBytes: UInt64 {
        var st = stat()
        guard sysCallResult({ fstat(dataFD, &st) }) == 0 else { return 0 }
        return UInt64(max(0, st.st_blocks)) * 512
    }

    /// Makes pending chunks durable and present, writes the metadata, and
    /// punches out what it records as absent but may still hold data; with
    /// `evict`, first evicts down to the low watermark. Without `force` or
    /// `evict`, does nothing unless chunks are pending and a second passed
    /// since the last commit.
    func commit(force: Bool, evict: Bool) throws(RemoteError) {
        try persistLock.withLock { _ throws(RemoteError) in
            let now = monotonicSeconds()
            // Only `store` appends to `pending`: the first `written` entries are on disk now.
            let written: Int? = state.withLock { s in
                force || evict || (!s.pending.isEmpty && now - s.lastPersist >= 1) ? s.pending.count : nil
            }
            guard let written else { return }
            if written > 0 {
                let rc = sysCallResult { fdatasync(dataFD) }
                if rc != 0 { throw .system(what: "fdatasync \(dataPath)", errno: -rc) }
            }
            let (image, punch): ([UInt8], [Int]) = state.withLock { s in
                for (chunk, hash) in s.pending.prefix(written) {
                    let bit: UInt64 = 1 << UInt64(chunk & 63)
                    if s.present[chunk >> 6] & bit == 0 { s.presentCount += 1 }
                    s.present[chunk >> 6] |= bit
                    s.hashes[chunk] = hash
                    s.budget?.touch(chunk)
                }
                s.pending.removeFirst(written)
                s.lastPersist = now
                var punch = s.stale
                s.stale.removeAll()
                if evict, let low = s.budget?.lowChunks {
                    while s.presentCount > low, let victim = s.budget!.popLeastRecent() {
                        s.present[victim >> 6] &= ~(1 << UInt64(victim & 63))
                        s.presentCount -= 1
                        punch.append(victim)
                    }
                }
                return (Self.encodeMeta(identity: identity, present: s.present, hashes: s.hashes), punch)
            }
            do throws(RemoteError) { try Self.writeAtomically(image, to: metaPath) } catch {
                // Still absent in memory; punched after a later metadata write succeeds.
                state.withLock { $0.stale += punch }
                throw error
            }
            guard !punch.isEmpty else { return }
            var failed: [Int] = []
            var firstError: Int32 = 0
            Self.forEachRun(punch.sorted()) { first, last in
                let rc = Self.punch(dataFD, chunks: first...last, chunkSize: identity.chunkSize)
                if rc != 0 {
                    failed += Array(first...last)
                    if firstError == 0 { firstError = -rc }
                }
            }
            state.withLock { s in
                s.stale += failed
                s.evicted += UInt64(punch.count - failed.count)
            }
            if firstError != 0 { throw .system(what: "fallocate(PUNCH_HOLE) \(dataPath)", errno: firstError) }
        }
    }

    /// Punches every run of chunks `present` marks absent (at open: blocks a
    /// crash left behind). Throws when the file system cannot punch holes.
    static func punchAbsent(_ fd: Int32, present: [UInt64], chunkCount: Int, chunkSize: Int,
                            path: String) throws(RemoteError) {
        var runStart = -1
        for chunk in 0...chunkCount {
            let absent = chunk < chunkCount && present[chunk >> 6] & (1 << UInt64(chunk & 63)) == 0
            if absent, runStart < 0 { runStart = chunk }
            if !absent, runStart >= 0 {
                let rc = punch(fd, chunks: runStart...(chunk - 1), chunkSize: chunkSize)
                if rc == -EOPNOTSUPP {
                    throw .cache("cache-size= needs a file system that can punch holes (fallocate PUNCH_HOLE); \(path)'s cannot")
                }
                if rc != 0 { throw .system(what: "fallocate(PUNCH_HOLE) \(path)", errno: -rc) }
                runStart = -1
            }
        }
    }

    /// Frees the blocks of `chunks` (the file keeps its size): 0 or -errno.
    static func punch(_ fd: Int32, chunks: ClosedRange<Int>, chunkSize: Int) -> Int32 {
        let offset = UInt64(chunks.lowerBound) * UInt64(chunkSize)
        let length = UInt64(chunks.count) * UInt64(chunkSize)
        return sysCallResult(returnsNegatedErrno: true) {
            vb_io_fallocate(fd, Int32(VB_FALLOC_PUNCH_HOLE | VB_FALLOC_KEEP_SIZE), offset, length)
        }
    }

    /// Calls `body` with each run of consecutive values of `sorted`.
    static func forEachRun(_ sorted: [Int], _ body: (Int, Int) -> Void) {
        var i = 0
        while i < sorted.count {
            var j = i
            while j + 1 < sorted.count, sorted[j + 1] <= sorted[j] + 1 { j += 1 }
            body(sorted[i], sorted[j])
            i = j + 1
        }
    }
}
