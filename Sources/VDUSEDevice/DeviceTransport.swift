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
}
