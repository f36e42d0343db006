/// Where a queue worker sends "used buffers available" notifications: the
/// VDUSE device injects an IRQ; the simulated driver counts them.
public protocol InterruptSink: AnyObject, Sendable {
    /// Notifies the driver of queue `queue`. Returns false if it could not.
    func interrupt(queue: Int) -> Bool
}
