import VirtioBlk
import VirtioCore

/// The queue side of QoS (`QoSLimiter`): a parsed read or write the limiter
/// does not admit yet is held (`qosHeld`, one per queue, nothing allocated)
/// and the queue stops consuming its avail ring; the thread sleeps in poll()
/// until the limiter says the request may start (or a wake: limits changed,
/// a completion, a pause), then continues in ring order. Nothing is failed
/// and nothing spins. Flush, discard, write-zeroes and GET_ID are not limited.
extension QueueWorker {
    /// True when the request in `slot` may start now (charged to the limiter),
    /// false when it must wait (`qosWaitNanos` says how long).
    @inline(__always)
    func qosAdmit(_ limiter: Unmanaged<QoSLimiter>, _ slot: UnsafeMutablePointer<RequestSlot>) -> Bool {
        // (the worker's `qos` keeps the limiter alive: no retain needed to use it)
        if !limiter._withUnsafeGuaranteedRef({ $0.isActive }) { return true }   // unlimited: one relaxed load
        let wait: UInt64
        switch slot.pointee.request.operation {
        case .read(_, _, _, let bytes) where bytes > 0: wait = limiter._withUnsafeGuaranteedRef { $0.admit(write: false, bytes: bytes) }
        case .write(_, _, _, let bytes) where bytes > 0: wait = limiter._withUnsafeGuaranteedRef { $0.admit(write: true, bytes: bytes) }
        default: return true
        }
        if wait == 0 { return true }
        qosWaitNanos = wait   // (stored only when held: a class field write costs an exclusivity check)
        return false
    }

    /// Starts the held request if the limiter admits it now: true when no
    /// request is held any more (the ring may be consumed again). A started
    /// request counts in `started` (the pass did work).
    func qosReleaseHeld(queue q: inout SplitQueue, prepared: inout Int, started: inout Int) -> Bool {
        guard let head = qosHeld else { return true }
        let slot = slots.slots + Int(head)
        if let limiter = qosRef, !qosAdmit(limiter, slot) { return false }
        qosHeld = nil
        started += 1
        if dispatch(slot: slot, tag: UInt32(head)) { prepared += 1 } else { complete(head: head, slot: slot, result: 0, queue: &q, now: QueueCounters.now()) }
        return true
    }

    /// Starts the held request whatever the limits (charged all the same):
    /// a queue that pauses or stops must not keep a consumed request.
    func qosForceHeld() {
        guard let head = qosHeld, var q = queue else { return }
        qosHeld = nil
        let slot = slots.slots + Int(head)
        switch slot.pointee.request.operation {
        case .read(_, _, _, let bytes): qos?.force(write: false, bytes: bytes)
        case .write(_, _, _, let bytes): qos?.force(write: true, bytes: bytes)
        default: break
        }
        if dispatch(slot: slot, tag: UInt32(head)) { backend.submit() } else { complete(head: head, slot: slot, result: 0, queue: &q, now: QueueCounters.now()) }
        queue = q
    }

    /// poll()'s timeout: -1 (until an event) unless a request is held, then
    /// the milliseconds until the limiter lets it start (rounded up, so the
    /// thread never wakes early and spins; at most 1 s, then it asks again).
    func qosPollTimeout() -> Int32 {
        guard qosHeld != nil else { return -1 }
        let ms = (qosWaitNanos + 999_999) / 1_000_000
        return Int32(min(max(ms, 1), 1000))
    }
}
