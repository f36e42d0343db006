import Glibc
import VirtioCore

/// Turns a walked descriptor chain into a `BlkRequest`: reads the header,
/// locates data and status, checks direction, sizes, alignment and range, and
/// maps every driver mistake to IOERR or UNSUPP. It edits the chain's segment
/// storage in place (trimming the header and status bytes off the data), and
/// allocates nothing.
public struct BlkRequestParser {
    public let parameters: BlkDeviceParameters
    /// The capacity when it cannot change (no `liveCapacity`).
    @usableFromInline let fixedCapacityBytes: UInt64
    /// The capacity of a resizable device, loaded once per range check.
    @usableFromInline let liveCapacity: LiveCapacity?
    @usableFromInline let alignment: UInt64

    public init(parameters: BlkDeviceParameters) {
        self.parameters = parameters
        fixedCapacityBytes = parameters.capacitySectors * BlkProtocol.sectorSize
        liveCapacity = parameters.liveCapacity
        alignment = UInt64(max(parameters.requiredAlignment, 512))
    }

    public func parse(_ chain: inout ChainSegments) -> BlkRequest {
        let status = chain.lastWritableByte
        func fail(_ s: UInt8) -> BlkRequest { BlkRequest(operation: .fail(status: s), status: status, writtenOnSuccess: 1) }

        if chain.error != nil { return fail(BlkStatus.ioError) }
        // The status byte must be the last byte of the last (writable) segment.
        guard status != nil, chain.writableBytes >= 1 else { return fail(BlkStatus.ioError) }
        guard chain.readableBytes >= UInt64(BlkProtocol.headerSize) else { return fail(BlkStatus.ioError) }

        var header = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &header) { gather(chain, from: 0, into: $0) }
        let type = UInt32(littleEndian: UInt32(truncatingIfNeeded: header.0))
        let sector = UInt64(littleEndian: header.1)
        let readableData = chain.readableBytes - UInt64(BlkProtocol.headerSize)
        let writableData = chain.writableBytes - 1

        switch type {
        case BlkRequestType.read:
            guard readableData == 0 else { return fail(BlkStatus.ioError) }
            guard let offset = checkRange(sector: sector, bytes: writableData) else { return fail(BlkStatus.ioError) }
            dropLastByte(&chain)
            let start = chain.writableStart
            return BlkRequest(operation: .read(offset: offset, dataStart: start, dataCount: chain.count - start,
                                               bytes: writableData),
                              status: status, writtenOnSuccess: UInt32(truncatingIfNeeded: writableData + 1))
        case BlkRequestType.write:
            guard writableData == 0 else { return fail(BlkStatus.ioError) }
            if parameters.readOnly { return fail(BlkStatus.ioError) }
            guard let offset = checkRange(sector: sector, bytes: readableData) else { return fail(BlkStatus.ioError) }
            let start = skipHeader(&chain)
            return BlkRequest(operation: .write(offset: offset, dataStart: start, dataCount: chain.writableStart - start,
                                                bytes: readableData),
                              status: status, writtenOnSuccess: 1)
        case BlkRequestType.flush:
            return BlkRequest(operation: .flush, status: status, writtenOnSuccess: 1)
        case BlkRequestType.getID:
            guard readableData == 0 else { return fail(BlkStatus.ioError) }
            let n = UInt32(min(writableData, UInt64(BlkProtocol.serialLength)))
            scatterSerial(&chain, count: Int(n))
            return BlkRequest(operation: .getID(bytes: n), status: status, writtenOnSuccess: n + 1)
        case BlkRequestType.discard, BlkRequestType.writeZeroes:
            let isDiscard = type == BlkRequestType.discard
            if isDiscard ? !parameters.discard : !parameters.writeZeroes { return fail(BlkStatus.unsupported) }
            if parameters.readOnly { return fail(BlkStatus.ioError) }
            guard writableData == 0, readableData == UInt64(BlkProtocol.rangeSegmentSize) else {
                return fail(BlkStatus.ioError)
            }
            var range = (UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &range) { gather(chain, from: UInt64(BlkProtocol.headerSize), into: $0) }
            let rangeSector = UInt64(littleEndian: range.0)
            let numSectors = UInt64(UInt32(littleEndian: UInt32(truncatingIfNeeded: range.1)))
            let flags = UInt32(littleEndian: UInt32(truncatingIfNeeded: range.1 >> 32))
            if isDiscard ? flags != 0 : flags & ~BlkProtocol.rangeFlagUnmap != 0 { return fail(BlkStatus.unsupported) }
            let limit = UInt64(isDiscard ? parameters.maxDiscardSectors : parameters.maxWriteZeroesSectors)
            guard numSectors > 0, numSectors <= limit,
                  let offset = checkRange(sector: rangeSector, bytes: numSectors * BlkProtocol.sectorSize)
            else { return fail(BlkStatus.ioError) }
            let length = numSectors * BlkProtocol.sectorSize
            return BlkRequest(operation: isDiscard ? .discard(offset: offset, length: length)
                                  : .writeZeroes(offset: offset, length: length,
                                                 unmap: flags & BlkProtocol.rangeFlagUnmap != 0),
                              status: status, writtenOnSuccess: 1)
        default:
            return fail(BlkStatus.unsupported)
        }
    }

    /// Byte offset of `sector` if [sector, sector + bytes) lies on the disk and is aligned.
    @usableFromInline
    func checkRange(sector: UInt64, bytes: UInt64) -> UInt64? {
        let capacityBytes = liveCapacity.map { $0.load() / BlkProtocol.sectorSize * BlkProtocol.sectorSize }
            ?? fixedCapacityBytes
        guard bytes % alignment == 0, sector <= capacityBytes / BlkProtocol.sectorSize else { return nil }
        let offset = sector * BlkProtocol.sectorSize
        guard offset % alignment == 0, bytes <= capacityBytes - offset else { return nil }
        return offset
    }

    /// Copies `dest.count` readable bytes starting at `from` out of the chain.
    func gather(_ chain: ChainSegments, from: UInt64, into dest: UnsafeMutableRawBufferPointer) {
        var skip = from
        var copied = 0
        var i = 0
        while i < chain.writableStart, copied < dest.count {
            let seg = chain.storage[i]
            var len = UInt64(seg.iov_len)
            var base = UnsafeRawPointer(seg.iov_base!)
            if skip >= len { skip -= len; i += 1; continue }
            base += Int(skip)
            len -= skip
            skip = 0
            let n = min(Int(len), dest.count - copied)
            (dest.baseAddress! + copied).copyMemory(from: base, byteCount: n)
            copied += n
            i += 1
        }
    }

    /// Removes the 16-byte header from the readable segments; returns the index of the first data segment.
    func skipHeader(_ chain: inout ChainSegments) -> Int {
        var skip = BlkProtocol.headerSize
        var i = 0
        while skip > 0 {
            let len = chain.storage[i].iov_len
            if len <= skip {
                skip -= len
                i += 1
            } else {
                chain.storage[i].iov_base = chain.storage[i].iov_base! + skip
                chain.storage[i].iov_len = len - skip
                skip = 0
            }
        }
        return i
    }

    /// Removes the status byte (last byte of the last segment) from the data.
    func dropLastByte(_ chain: inout ChainSegments) {
        let last = chain.count - 1
        if chain.storage[last].iov_len == 1 {
            chain.count -= 1
        } else {
            chain.storage[last].iov_len -= 1
        }
    }

    /// Writes the serial (zero padded) into the first `count` writable data bytes.
    func scatterSerial(_ chain: inout ChainSegments, count: Int) {
        var written = 0
        var i = chain.writableStart
        while written < count, i < chain.count {
            let seg = chain.storage[i]
            let p = seg.iov_base!.assumingMemoryBound(to: UInt8.self)
            var j = 0
            while j < seg.iov_len, written < count {
                p[j] = written < parameters.serial.count ? parameters.serial[written] : 0
                j += 1
                written += 1
            }
            i += 1
        }
    }
}
