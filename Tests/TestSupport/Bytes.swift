import Glibc

/// Page-aligned memory (usable with O_DIRECT), freed on deinit.
public final class AlignedBuffer {
    public let base: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int, fill: UInt8 = 0) {
        var memory: UnsafeMutableRawPointer?
        precondition(posix_memalign(&memory, 4096, max(count, 1)) == 0)
        base = memory!
        self.count = count
        memset(base, Int32(fill), count)
    }

    deinit { free(base) }

    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    public func set(_ values: [UInt8]) {
        precondition(values.count == count)
        values.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: count) }
    }

    /// An iovec for `[offset, offset + length)` of this buffer.
    public func iovec(_ offset: Int = 0, _ length: Int? = nil) -> Glibc.iovec {
        Glibc.iovec(iov_base: base + offset, iov_len: length ?? (count - offset))
    }
}

/// A deterministic byte pattern that differs per `seed`. No byte is zero,
/// so a range that was zeroed (or never written) always shows.
public func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &* 7 &+ ($0 >> 9)) | 1 }
}

/// Deterministic pseudo-random numbers (xorshift), reproducible per seed.
public struct TestRandom {
    public var state: UInt64

    public init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    /// A number in `0..<n`.
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count { out[i] = UInt8(truncatingIfNeeded: next() >> 24) }
        return out
    }
}

/// `count` pseudo-random bytes, the same for the same seed.
public func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRandom(seed: seed)
    return rng.bytes(count)
}

/// Whether `a[range]` equals `b[range]` (memcmp: fast in debug builds).
public func sameBytes(_ a: [UInt8], _ b: [UInt8], _ range: Range<Int>) -> Bool {
    sameBytes(a, range.lowerBound, b, range.lowerBound, range.count)
}

/// Whether `count` bytes of `a` from `i` equal those of `b` from `j`.
public func sameBytes(_ a: [UInt8], _ i: Int, _ b: [UInt8], _ j: Int, _ count: Int) -> Bool {
    guard i >= 0, j >= 0, count >= 0, i + count <= a.count, j + count <= b.count else { return false }
    if count == 0 { return true }
    return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress! + i, y.baseAddress! + j, count) == 0 } }
}
