/// XXH64 (xxHash, 64-bit), the hash zstd uses for frame checksums and the
/// seekable format for its per-frame checksums. Owns nothing: `hash` hashes
/// one buffer, `State` hashes a stream fed in pieces.
public enum XXH64 {
    public static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    public static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    public static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    public static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    public static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    /// XXH64 of the empty input with seed 0 (the checksum of an empty frame).
    public static let empty: UInt64 = 0xEF46_DB37_51D8_E999

    @inline(__always)
    public static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    public static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* prime2, 31) &* prime1
    }

    @inline(__always)
    public static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* prime1 &+ prime4
    }

    @inline(__always)
    public static func load64(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inline(__always)
    public static func load32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    /// The 64-bit hash of `data`.
    public static func hash(_ data: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        guard let p = data.baseAddress, data.count > 0 else { return finish(seed &+ prime5, length: 0, tail: nil, count: 0) }
        let length = data.count
        var offset = 0
        var h: UInt64
        if length >= 32 {
            var v1 = seed &+ prime1 &+ prime2, v2 = seed &+ prime2, v3 = seed, v4 = seed &- prime1
            let limit = length - 32
            repeat {
                v1 = round(v1, load64(p, offset))
                v2 = round(v2, load64(p, offset + 8))
                v3 = round(v3, load64(p, offset + 16))
                v4 = round(v4, load64(p, offset + 24))
                offset += 32
            } while offset <= limit
            h = converge(v1, v2, v3, v4)
        } else {
            h = seed &+ prime5
        }
        return finish(h, length: UInt64(length), tail: p + offset, count: length - offset)
    }

    /// The 64-bit hash of `bytes`.
    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    @inline(__always)
    public static func converge(_ v1: UInt64, _ v2: UInt64, _ v3: UInt64, _ v4: UInt64) -> UInt64 {
        var h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        h = merge(h, v1)
        h = merge(h, v2)
        h = merge(h, v3)
        return merge(h, v4)
    }

    /// Mixes in the total length and the last `count` (< 32) bytes, then avalanches.
    public static func finish(_ acc: UInt64, length: UInt64, tail: UnsafeRawPointer?, count: Int) -> UInt64 {
        var h = acc &+ length
        var offset = 0
        if let tail {
            while offset + 8 <= count {
                h ^= round(0, load64(tail, offset))
                h = rotl(h, 27) &* prime1 &+ prime4
                offset += 8
            }
            if offset + 4 <= count {
                h ^= load32(tail, offset) &* prime1
                h = rotl(h, 23) &* prime2 &+ prime3
                offset += 4
            }
            while offset < count {
                h ^= UInt64(tail.load(fromByteOffset: offset, as: UInt8.self)) &* prime5
                h = rotl(h, 11) &* prime1
                offset += 1
            }
        }
        h ^= h >> 33
        h &*= prime2
        h ^= h >> 29
        h &*= prime3
        h ^= h >> 32
        return h
    }

    /// Streaming XXH64: `update` with pieces of any size, `digest` at any time.
    public struct State: Sendable {
        private var v1, v2, v3, v4: UInt64
        private let seed: UInt64
        private var total: UInt64 = 0
        /// Up to 31 bytes not yet folded into the accumulators.
        private var buffer: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        private var buffered = 0

        public init(seed: UInt64 = 0) {
            self.seed = seed
            v1 = seed &+ prime1 &+ prime2
            v2 = seed &+ prime2
            v3 = seed
            v4 = seed &- prime1
        }

        public mutating func update(_ data: UnsafeRawBufferPointer) {
            guard let p = data.baseAddress, data.count > 0 else { return }
            total &+= UInt64(data.count)
            var offset = 0
            if buffered > 0 {
                let take = min(32 - buffered, data.count)
                withUnsafeMutableBytes(of: &buffer) { b in
                    (b.baseAddress! + buffered).copyMemory(from: p, byteCount: take)
                }
                buffered += take
                offset = take
                if buffered < 32 { return }
                let stripe = buffer
                withUnsafeBytes(of: stripe) { b in consume(b.baseAddress!, 0) }
                buffered = 0
            }
            while data.count - offset >= 32 {
                consume(p, offset)
                offset += 32
            }
            if offset < data.count {
                let rest = data.count - offset
                withUnsafeMutableBytes(of: &buffer) { b in
                    b.baseAddress!.copyMemory(from: p + offset, byteCount: rest)
                }
                buffered = rest
            }
        }

        public mutating func update(_ value: UInt64) {
            var le = value.littleEndian
            withUnsafeBytes(of: &le) { update($0) }
        }

        @inline(__always)
        private mutating func consume(_ p: UnsafeRawPointer, _ offset: Int) {
            v1 = XXH64.round(v1, XXH64.load64(p, offset))
            v2 = XXH64.round(v2, XXH64.load64(p, offset + 8))
            v3 = XXH64.round(v3, XXH64.load64(p, offset + 16))
            v4 = XXH64.round(v4, XXH64.load64(p, offset + 24))
        }

        public func digest() -> UInt64 {
            let h = total >= 32 ? XXH64.converge(v1, v2, v3, v4) : seed &+ XXH64.prime5
            let stripe = buffer
            let count = buffered
            return withUnsafeBytes(of: stripe) { b in
                XXH64.finish(h, length: total, tail: b.baseAddress!, count: count)
            }
        }
    }
}
