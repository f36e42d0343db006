import Logging

/// Moves a virtio-vdpa device's bounce region onto daemon pages
/// (`--bounce user`, `VDUSE_IOTLB_REG_UMEM`) once the kernel has one. The
/// region appears only when the driver maps its first buffer, so after
/// DRIVER_OK this checks on a timer (`retryAfterMillis`) until it is there,
/// unsupported, or a minute has passed. Owns that waiting: whether a check is
/// pending and how many were made since DRIVER_OK. Used by the device
/// controller on the control thread only.
public final class UserBounceAdoption {
    /// Checks after DRIVER_OK before giving up (a minute at `retryIntervalMillis`).
    public static var maxChecks: Int { 3000 }
    /// Time between checks while the region has not appeared.
    public static var retryIntervalMillis: Int32 { 20 }

    /// Waiting for the kernel's bounce region to appear.
    public private(set) var isPending = false
    /// Checks made since DRIVER_OK.
    public private(set) var checks = 0
    let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    /// How long the control loop may sleep before `retry` has something to
    /// do (milliseconds; -1: until the next request).
    public var retryAfterMillis: Int32 { isPending ? Self.retryIntervalMillis : -1 }

    /// DRIVER_OK: counts afresh from here.
    public func restartCount() { checks = 0 }

    /// Reset: no more checks until the next DRIVER_OK.
    public func cancel() { isPending = false }

    /// One check: registers daemon pages if the region is ready. `pausingQueues`
    /// runs its argument with every running queue parked (no I/O in flight, no
    /// stale view of the kernel's pages) and then drops every view's mappings
    /// before the queues resume, so they pick the daemon pages up.
    public func check<Transport: DeviceTransport>(_ transport: Transport,
                                                  pausingQueues: (_ body: () -> Void) -> Void) {
        isPending = false
        switch transport.userBounceState() {
        case .registered: return
        case .notYet:
            checks += 1
            if checks < Self.maxChecks {
                isPending = true
            } else {
                logger.warning("--bounce user: no bounce region appeared within a minute of DRIVER_OK; keeping the kernel's bounce pages")
            }
        case .unsupported(let why): logger.warning("--bounce user: \(why); keeping the kernel's bounce pages")
        case .ready(let bytes):
            pausingQueues {
                do {
                    try transport.registerUserBounce(bytes: bytes)
                    logger.info("bounce region: \(bytes >> 20) MiB of daemon pages registered (VDUSE_IOTLB_REG_UMEM)")
                } catch {
                    logger.warning("--bounce user: \(error); keeping the kernel's bounce pages")
                }
            }
        }
    }
}
