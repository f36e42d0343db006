import Synchronization

/// The disk's capacity as it changes while the device runs (online resize):
/// one cell shared by every copy of the device's `BlkDeviceParameters` and
/// so by every queue's request parser. The control path stores, each
/// request's range check loads (one atomic read, no lock).
public final class LiveCapacity: Sendable, Equatable {
    private let bytes: Atomic<UInt64>

    public init(bytes: UInt64) {
        self.bytes = Atomic(bytes)
    }

    /// The capacity in bytes now.
    @inlinable public var currentBytes: UInt64 { load() }

    @usableFromInline func load() -> UInt64 { bytes.load(ordering: .acquiring) }

    /// Publishes a new capacity (a multiple of 512) to every parser.
    public func store(_ newBytes: UInt64) { bytes.store(newBytes, ordering: .releasing) }

    /// Cells are equal only to themselves (parameters sharing one cell describe the same disk).
    public static func == (a: LiveCapacity, b: LiveCapacity) -> Bool { a === b }
}
