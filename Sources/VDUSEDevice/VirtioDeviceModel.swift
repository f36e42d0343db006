import VirtioCore

/// What one virtio device type (block, net, ...) tells the VDUSE layer: the
/// identity and config space `VDUSE_CREATE_DEV` takes, the queue limits
/// `VDUSE_VQ_SETUP` takes, and a service per queue that serves requests once
/// the driver is ready. Owns whatever the device type shares across its
/// queues (parameters, a backend factory); the VDUSE layer never looks inside.
/// Called on the control path only (device creation), never per request.
public protocol VirtioDeviceModel: AnyObject {
    /// The virtio device id (`VIRTIO_ID_*`: 2 is a block device).
    var deviceID: UInt32 { get }
    /// Feature bits offered to the driver (must include VERSION_1 and ACCESS_PLATFORM).
    var offeredFeatures: UInt64 { get }
    /// The device-specific config space, as the driver reads it (at most a page).
    func configSpace() -> [UInt8]
    /// How many virtqueues the device has.
    var queueCount: Int { get }
    /// The largest ring the driver may choose for each queue (a power of two).
    var maxQueueSize: UInt16 { get }
    /// A one-line description for the log (what serves the requests).
    var summary: String { get }
    /// Makes the service of queue `index`, once per queue, when the device's
    /// controller is set up (before any driver exists). An error fails the
    /// device creation.
    func makeQueueService(index: Int) throws -> any VirtqueueService
}

/// Where and how one virtqueue runs, as the driver configured it and the
/// controller resolved it at DRIVER_OK: everything a queue service needs to
/// start serving besides the guest-memory view.
public struct VirtqueueStart: Sendable {
    public var queueIndex: Int
    /// Ring addresses (IOVAs) and the size the driver chose (checked against `maxQueueSize`).
    public var addresses: QueueAddresses
    /// Features the driver accepted.
    public var features: UInt64
    /// The avail index to resume from (0 for a fresh queue).
    public var startAvail: UInt16
    /// eventfd the driver's kicks arrive on (owned by the controller; valid until `stop`).
    public var kickFD: Int32
    /// Where used-buffer notifications go.
    public var interruptSink: any InterruptSink
    /// The queue's in-flight log, already begun or recovered (nil: not logged).
    public var log: InflightQueueLog?
    /// Heads a previous daemon left in flight, in submission order (adoption).
    public var resubmit: [UInt16]
    /// Submission number the log continues from.
    public var nextSeq: UInt64

    public init(queueIndex: Int, addresses: QueueAddresses, features: UInt64, startAvail: UInt16, kickFD: Int32,
                interruptSink: any InterruptSink, log: InflightQueueLog? = nil, resubmit: [UInt16] = [],
                nextSeq: UInt64 = 1) {
        self.queueIndex = queueIndex
        self.addresses = addresses
        self.features = features
        self.startAvail = startAvail
        self.kickFD = kickFD
        self.interruptSink = interruptSink
        self.log = log
        self.resubmit = resubmit
        self.nextSeq = nextSeq
    }
}

/// Serves one virtqueue between DRIVER_OK and reset, typically on its own
/// thread: the device controller's only handle on a queue. Owns the queue's
/// per-queue resources (e.g. a backend handle) across resets. Every method is
/// called on the control thread only; none of them runs per request.
///
/// Life of one service: `start` (at DRIVER_OK) -> any number of pause
/// (`requestPause` + `waitParked`) / `resume` rounds (around IOTLB changes) ->
/// `stop` (at reset) -> `start` again at the next DRIVER_OK.
public protocol VirtqueueService: AnyObject {
    /// Starts serving the queue through `memory` (a fresh view, owned by the
    /// service until `stop`; invalidated by the controller only while the
    /// service is parked or stopped). An error leaves the queue stopped.
    func start<Memory: GuestMemory>(_ queue: VirtqueueStart, memory: Memory) throws
    /// Asks the running queue to quiesce (finish the I/O in flight) and park.
    /// Split from `waitParked` so several queues quiesce in parallel.
    func requestPause()
    /// Returns once the queue is parked (after `requestPause`).
    func waitParked()
    /// Lets a parked queue continue (it re-resolves its rings first).
    func resume()
    /// Drains what is in flight, ends the queue's thread and returns the next
    /// avail index it would have consumed (for GET_VQ_STATE).
    func stop() -> UInt16
    /// The next avail index the running queue will consume.
    var currentAvailIndex: UInt16 { get }
    /// True once the running queue met a ring it cannot trust (the device needs a reset).
    var needsReset: Bool { get }
}
