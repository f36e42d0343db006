import CSys
import CVDUSE
import Glibc
import SystemSupport
import VirtioCore

/// One queue thread's view of the device's IOVA space: regions found with
/// VDUSE_IOTLB_GET_FD, mmap'd on first use and cached. Owned by one queue
/// worker; invalidated by the control thread only while that worker is
/// paused (or stopped).
public final class IOTLBMemory: GuestMemory, @unchecked Sendable {
    struct Mapping {
        var start: UInt64
        var last: UInt64
        var base: UnsafeMutableRawPointer
        var writable: Bool
        var length: Int { Int(last - start + 1) }
    }

    let deviceFD: Int32
    var mappings: [Mapping] = []
    var lastHit = 0
    /// Daemon pages backing IOVA [0, size) instead of the kernel's bounce
    /// pages (whose mmap stops working once these are registered). Kept for
    /// its lifetime only: `translate` reads the plain copies below, so the
    /// hot path never touches the reference count all queues share.
    var userBounce: UserBounceBuffer? {
        didSet {
            bounceBase = userBounce?.base
            bounceSize = userBounce?.size ?? 0
        }
    }
    private var bounceBase: UnsafeMutableRawPointer?
    private var bounceSize: UInt64 = 0

    public init(deviceFD: Int32) {
        self.deviceFD = deviceFD
        mappings.reserveCapacity(16)
    }

    deinit { invalidateAll() }

    public func translate(_ address: UInt64, length: UInt64, write: Bool) -> GuestSpan? {
        if address < bounceSize, let base = bounceBase {
            return GuestSpan(pointer: base + Int(address), length: min(length, bounceSize - address))
        }
        if lastHit < mappings.count, let s = span(mappings[lastHit], address, length, write) { return s }
        for i in mappings.indices where address >= mappings[i].start && address <= mappings[i].last {
            lastHit = i
            return span(mappings[i], address, length, write)
        }
        guard let m = map(address) else { return nil }
        mappings.append(m)
        lastHit = mappings.count - 1
        return span(m, address, length, write)
    }

    @inline(__always)
    func span(_ m: Mapping, _ address: UInt64, _ length: UInt64, _ write: Bool) -> GuestSpan? {
        guard address >= m.start, address <= m.last, !write || m.writable else { return nil }
        let off = address - m.start
        return GuestSpan(pointer: m.base + Int(off), length: min(length, m.last - address + 1))
    }

    /// Asks the kernel for the region holding `address` and maps it.
    func map(_ address: UInt64) -> Mapping? {
        var entry = vb_vduse_iotlb_entry()
        entry.start = address
        entry.last = address
        let fd = sysCallResult(returnsNegatedErrno: true) { vb_vduse_iotlb_get_fd(deviceFD, &entry) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard entry.last >= entry.start, entry.start <= address, address <= entry.last,
              entry.last - entry.start < UInt64(Int.max) else { return nil }
        let writable = entry.perm & UInt8(VB_VDUSE_ACCESS_WO) != 0
        var err: Int32 = 0
        guard let p = vb_mmap_shared(fd, entry.offset, Int(entry.last - entry.start + 1), writable ? 1 : 0, &err)
        else { return nil }
        return Mapping(start: entry.start, last: entry.last, base: p, writable: writable)
    }

    /// Unmaps every cached region overlapping [start, last].
    public func invalidate(start: UInt64, last: UInt64) {
        mappings.removeAll { m in
            guard m.start <= last && start <= m.last else { return false }
            _ = vb_munmap(m.base, m.length)
            return true
        }
        lastHit = 0
    }

    public func invalidateAll() { invalidate(start: 0, last: .max) }
}
