import VirtioCore

/// What the driver configured for one queue, as VQ_GET_INFO reports it.
public struct QueueInfo: Equatable, Sendable {
    public var addresses: QueueAddresses
    public var availIndex: UInt16
    public var ready: Bool

    public init(addresses: QueueAddresses, availIndex: UInt16, ready: Bool) {
        self.addresses = addresses
        self.availIndex = availIndex
        self.ready = ready
    }
}

/// The device-side operations the controller needs from the kernel (VDUSE
/// ioctls), behind a seam so the control logic runs against a simulated
/// driver in tests and fuzzers.
public protocol DeviceTransport: AnyObject, Sendable {
    associatedtype Memory: GuestMemory
    func negotiatedFeatures() throws(VDUSEError) -> UInt64
    func queueInfo(_ index: Int) throws(VDUSEError) -> QueueInfo
    func attachKickFD(queue: Int, fd: Int32) throws(VDUSEError)
    func detachKickFD(queue: Int)
    /// A fresh guest-memory view for one queue worker.
    func makeMemory(queue: Int) -> Memory
    /// Drops cached mappings overlapping [start, last] (the owning worker is paused).
    func invalidate(_ memory: Memory, start: UInt64, last: UInt64)
    var interruptSink: any InterruptSink { get }
    /// Where daemon-supplied bounce pages (`VDUSE_IOTLB_REG_UMEM`) stand.
    func userBounceState() -> UserBounceState
    /// Registers daemon pages as the bounce region of `bytes` (every worker
    /// is paused); afterwards `invalidate` makes a view use them.
    func registerUserBounce(bytes: UInt64) throws(VDUSEError)
}

/// Whether the device's bounce region can take daemon pages.
public enum UserBounceState: Equatable, Sendable {
    /// No bounce region yet: the kernel sets it up when the driver maps its first buffer.
    case notYet
    /// A bounce region of this many bytes that accepts daemon pages.
    case ready(bytes: UInt64)
    /// Daemon pages are in use.
    case registered
    /// Never possible here (vhost-vdpa, an old kernel, a simulated transport).
    case unsupported(String)
}

extension DeviceTransport {
    public func userBounceState() -> UserBounceState { .unsupported("this transport has no bounce region") }
    public func registerUserBounce(bytes: UInt64) throws(VDUSEError) {
        throw .attach("this transport has no bounce region")
    }
}
