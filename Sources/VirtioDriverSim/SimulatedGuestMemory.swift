import Glibc
import VirtioCore

/// Plain process memory posing as guest memory: one or more regions, each
/// at an IOVA of the test's choosing. Owns the allocations; hands out bump-
/// allocated buffers. Used by tests, benchmarks and fuzzers instead of the
/// VDUSE IOTLB.
public final class SimulatedGuestMemory: GuestMemory, @unchecked Sendable {
    public struct Region {
        public let iova: UInt64
        public let size: UInt64
        public let base: UnsafeMutableRawPointer
        public let writable: Bool
    }

    public private(set) var regions: [Region] = []
    var bump: [UInt64] = []

    /// One writable region of `size` bytes at `iova`.
    public init(iova: UInt64 = 0x1_0000_0000, size: UInt64 = 16 << 20) {
        addRegion(iova: iova, size: size)
    }

    deinit { for r in regions { free(r.base) } }

    /// Adds another region (zeroed, page aligned).
    public func addRegion(iova: UInt64, size: UInt64, writable: Bool = true) {
        var p: UnsafeMutableRawPointer?
        posix_memalign(&p, 4096, Int(size))
        memset(p!, 0, Int(size))
        regions.append(Region(iova: iova, size: size, base: p!, writable: writable))
        bump.append(0)
    }

    public func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan? {
        for r in regions where address >= r.iova && address - r.iova < r.size {
            if write && !r.writable { return nil }
            let off = address - r.iova
            return GuestSpan(pointer: r.base + Int(off), length: min(length, r.size - off))
        }
        return nil
    }

    /// Allocates `size` bytes (aligned) in region `region`; returns its IOVA.
    public func allocate(_ size: UInt64, alignment: UInt64 = 16, region: Int = 0) -> UInt64 {
        let r = regions[region]
        let start = (bump[region] + alignment - 1) / alignment * alignment
        precondition(start + size <= r.size, "simulated guest memory exhausted")
        bump[region] = start + size
        return r.iova + start
    }

    /// Forgets every allocation in `region` after `mark` (from `allocationMark`).
    public func release(to mark: UInt64, region: Int = 0) { bump[region] = mark }
    public func allocationMark(region: Int = 0) -> UInt64 { bump[region] }

    /// Host pointer for an IOVA (test convenience; traps when unmapped).
    public func pointer(_ iova: UInt64) -> UnsafeMutableRawPointer {
        translate(iova, length: 1, write: false)!.pointer
    }

    public func write(_ bytes: [UInt8], at iova: UInt64) {
        bytes.withUnsafeBytes { pointer(iova).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }

    public func read(_ iova: UInt64, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer(iova), count: count))
    }
}
