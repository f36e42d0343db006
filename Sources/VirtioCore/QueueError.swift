/// Ways a driver can break a virtqueue. Every case is a driver bug or an
/// attack. `isFatal` ones leave the ring in a state the device cannot trust:
/// the queue stops and the device asks for a reset (NEEDS_RESET). The others
/// spoil a single request, which is answered with an error status.
public enum QueueError: Error, Equatable, CustomStringConvertible {
    /// A ring area (descriptor table, avail or used ring) is not mapped contiguously.
    case ringUnmapped(area: String, address: UInt64)
    /// avail.idx moved further than the queue size since the last look.
    case availIndexRunaway(avail: UInt16, lastSeen: UInt16)
    case headOutOfRange(UInt16)
    /// The same head was made available again while still in flight.
    case headInFlight(UInt16)
    case nextOutOfRange(UInt16)
    /// More descriptors than the queue (or indirect table) holds: a loop.
    case chainTooLong
    case nestedIndirect
    case indirectNotNegotiated
    case indirectWithNext
    case badIndirectTable(address: UInt64, length: UInt32)
    /// A data buffer with length 0.
    case zeroLengthBuffer
    /// address + length overflows 64 bits.
    case bufferWraps(address: UInt64, length: UInt32)
    /// A buffer not inside any mapping (or without the access needed).
    case bufferUnmapped(address: UInt64, length: UInt32)
    /// More segments than the request can carry.
    case tooManySegments
    /// A device-readable descriptor after a device-writable one.
    case readableAfterWritable

    public var isFatal: Bool {
        switch self {
        case .zeroLengthBuffer, .bufferWraps, .bufferUnmapped, .tooManySegments, .readableAfterWritable:
            return false
        default:
            return true
        }
    }

    public var description: String {
        switch self {
        case .ringUnmapped(let a, let addr): return "\(a) ring not mapped at 0x\(String(addr, radix: 16))"
        case .availIndexRunaway(let a, let l): return "avail idx \(a) ran away from \(l)"
        case .headOutOfRange(let h): return "head \(h) out of range"
        case .headInFlight(let h): return "head \(h) made available while in flight"
        case .nextOutOfRange(let n): return "next \(n) out of range"
        case .chainTooLong: return "descriptor chain too long (loop?)"
        case .nestedIndirect: return "indirect table inside an indirect table"
        case .indirectNotNegotiated: return "indirect descriptor without INDIRECT_DESC"
        case .indirectWithNext: return "indirect descriptor with NEXT set"
        case .badIndirectTable(let a, let l): return "bad indirect table at 0x\(String(a, radix: 16)) len \(l)"
        case .zeroLengthBuffer: return "zero-length buffer"
        case .bufferWraps(let a, let l): return "buffer 0x\(String(a, radix: 16))+\(l) wraps"
        case .bufferUnmapped(let a, let l): return "buffer 0x\(String(a, radix: 16))+\(l) not mapped"
        case .tooManySegments: return "too many segments"
        case .readableAfterWritable: return "device-readable descriptor after a writable one"
        }
    }
}
