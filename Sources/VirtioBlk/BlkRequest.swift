import Glibc
import VirtioCore

/// A virtio-blk request parsed from a chain: what the backend must do, with
/// offsets and lengths already checked against the device. Data buffers stay
/// in the chain's segment storage (`dataStart ..< dataStart + dataCount`).
public enum BlkOperation: Equatable {
    case read(offset: UInt64, dataStart: Int, dataCount: Int, bytes: UInt64)
    case write(offset: UInt64, dataStart: Int, dataCount: Int, bytes: UInt64)
    case flush
    /// GET_ID: `bytes` of serial go to the data segments (already copied by the parser).
    case getID(bytes: UInt32)
    case discard(offset: UInt64, length: UInt64)
    case writeZeroes(offset: UInt64, length: UInt64, unmap: Bool)
    /// Answer at once with this status, no backend work.
    case fail(status: UInt8)
}

/// A parsed request: the operation, where its status byte goes (nil when the
/// chain has no writable last byte: nothing can be reported) and how many
/// bytes the device writes into the chain on success (the used length).
public struct BlkRequest: Equatable {
    public var operation: BlkOperation
    public var status: UnsafeMutablePointer<UInt8>?
    public var writtenOnSuccess: UInt32

    public init(operation: BlkOperation, status: UnsafeMutablePointer<UInt8>?, writtenOnSuccess: UInt32) {
        self.operation = operation
        self.status = status
        self.writtenOnSuccess = writtenOnSuccess
    }
}
