import Glibc
import VirtioBlk
import VirtioCore

/// One in-flight request: its chain's segments and the parsed request.
struct RequestSlot {
    var segments: ChainSegments
    var request: BlkRequest
    var busy: Bool
    /// When the batch that consumed this head started (monotonic ns).
    var startNanos: UInt64 = 0
}

/// Per-queue table of request slots indexed by head descriptor index (a head
/// cannot be reused by the driver until the device returns it), with the
/// iovec storage for every slot allocated once up front.
final class RequestSlots {
    let slots: UnsafeMutablePointer<RequestSlot>
    let iovecs: UnsafeMutablePointer<iovec>
    let count: Int
    let segmentsPerSlot: Int

    init(count: Int, segmentsPerSlot: Int) {
        self.count = count
        self.segmentsPerSlot = segmentsPerSlot
        iovecs = .allocate(capacity: count * segmentsPerSlot)
        iovecs.initialize(repeating: iovec(), count: count * segmentsPerSlot)
        slots = .allocate(capacity: count)
        for i in 0..<count {
            (slots + i).initialize(to: RequestSlot(
                segments: ChainSegments(storage: iovecs + i * segmentsPerSlot, capacity: segmentsPerSlot),
                request: BlkRequest(operation: .flush, status: nil, writtenOnSuccess: 0),
                busy: false))
        }
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
        iovecs.deallocate()
    }
}
