import Logging

/// The metadata keys every log line of a device carries (`device`, set by
/// the command that serves it, and `queue` on a queue's own lines), so that
/// text and JSON logs can be filtered per device and per queue.
extension Logger {
    /// This logger with `queue=INDEX` attached to every line it writes.
    public func forQueue(_ index: Int) -> Logger {
        var l = self
        l[metadataKey: "queue"] = .stringConvertible(index)
        return l
    }
}
