import Synchronization

/// The current size of a resizable image, shared by the factory (which
/// changes it on an online resize) and every queue handle (which range-check
/// each op against it with one atomic load). Owns the value.
public final class CapacityCell: Sendable {
    private let bytes: Atomic<UInt64>

    public init(_ bytes: UInt64) { self.bytes = Atomic(bytes) }

    /// The size in bytes now.
    @inline(__always)
    public var current: UInt64 { bytes.load(ordering: .acquiring) }

    /// Publishes a new size.
    public func store(_ newBytes: UInt64) { bytes.store(newBytes, ordering: .releasing) }
}
