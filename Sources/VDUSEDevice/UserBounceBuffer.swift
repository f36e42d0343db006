import Glibc

/// Daemon-supplied bounce pages for a virtio-vdpa device
/// (`VDUSE_IOTLB_REG_UMEM`): anonymous memory the size of the kernel's bounce
/// region, which the kernel then copies request data into and out of instead
/// of its own pages. Owns the mapping; the kernel pins its pages while it is
/// registered and unpins them when the device fd closes, so the owner keeps
/// it alive until the transport closed that fd.
public final class UserBounceBuffer: @unchecked Sendable {
    /// The largest bounce region VDUSE allows (`VDUSE_MAX_BOUNCE_SIZE`).
    public static let maximumSize: UInt64 = 1 << 30
    static let hugePage = 2 << 20

    public let base: UnsafeMutableRawPointer
    public let size: UInt64
    let mapping: UnsafeMutableRawPointer
    let mappingLength: Int

    /// Maps `size` bytes (a page multiple up to 1 GiB), 2 MiB aligned and
    /// advised for transparent huge pages (fewer TLB misses, fewer pages to pin).
    public init(size: UInt64) throws(VDUSEError) {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        guard size > 0, size <= Self.maximumSize, size % page == 0 else {
            throw .attach("bounce region of \(size) bytes: not a page multiple of at most 1 GiB")
        }
        let length = Int(size) + Self.hugePage
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw .ioctl(what: "mmap of \(size) bounce bytes", errno: errno) }
        mapping = p
        mappingLength = length
        let aligned = (UInt(bitPattern: p) + UInt(Self.hugePage) - 1) & ~UInt(Self.hugePage - 1)
        base = UnsafeMutableRawPointer(bitPattern: aligned)!
        self.size = size
        _ = madvise(base, Int(size), MADV_HUGEPAGE)
    }

    deinit { munmap(mapping, mappingLength) }

    /// Lets this process pin `size` more bytes: the kernel checks
    /// RLIMIT_MEMLOCK for REG_UMEM even for root.
    func raiseMemlockLimit() throws(VDUSEError) {
        var limit = rlimit()
        guard getrlimit(RLIMIT_MEMLOCK_VALUE, &limit) == 0 else { throw .ioctl(what: "getrlimit(MEMLOCK)", errno: errno) }
        if limit.rlim_cur == RLIM_INFINITY_VALUE { return }
        var wanted = rlimit(rlim_cur: RLIM_INFINITY_VALUE, rlim_max: RLIM_INFINITY_VALUE)
        if setrlimit(RLIMIT_MEMLOCK_VALUE, &wanted) == 0 { return }
        // Not privileged: the hard limit is as far as it goes.
        wanted = rlimit(rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max)
        guard limit.rlim_max == RLIM_INFINITY_VALUE || limit.rlim_max >= rlim_t(size),
              setrlimit(RLIMIT_MEMLOCK_VALUE, &wanted) == 0 else {
            throw .attach("cannot pin \(size >> 20) MiB of bounce pages: RLIMIT_MEMLOCK is \(limit.rlim_max) bytes (ulimit -l)")
        }
    }
}

// Glibc's RLIMIT_MEMLOCK and RLIM_INFINITY are macros Swift cannot see.
let RLIMIT_MEMLOCK_VALUE = __rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue)
let RLIM_INFINITY_VALUE = rlim_t.max
