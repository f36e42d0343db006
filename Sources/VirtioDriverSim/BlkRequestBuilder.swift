import VirtioBlk
import VirtioCore

/// A virtio-blk request built in simulated memory: where its data and status live.
public struct SimBlkRequest {
    public var head: UInt16
    public var dataIOVA: UInt64
    public var dataLength: UInt32
    public var statusIOVA: UInt64
}

/// Builds well-formed virtio-blk requests (header, data, status) on a
/// `SimulatedDriver`, the way Linux's virtio_blk lays them out.
public struct BlkRequestBuilder {
    public let driver: SimulatedDriver
    public var indirect: Bool

    public init(driver: SimulatedDriver, indirect: Bool = false) {
        self.driver = driver
        self.indirect = indirect
    }

    var memory: SimulatedGuestMemory { driver.memory }

    /// Writes a 16-byte header; returns its IOVA.
    public func header(type: UInt32, sector: UInt64) -> UInt64 {
        let iova = memory.allocate(16, alignment: 16)
        let p = memory.pointer(iova)
        p.storeBytes(of: type.littleEndian, as: UInt32.self)
        p.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: sector.littleEndian, toByteOffset: 8, as: UInt64.self)
        return iova
    }

    public func status() -> UInt64 {
        let iova = memory.allocate(1, alignment: 1)
        memory.pointer(iova).storeBytes(of: UInt8(0xff), as: UInt8.self)
        return iova
    }

    /// Reads `length` bytes at `sector` into `segments` equal buffers.
    public func read(sector: UInt64, length: UInt32, segments: Int = 1) -> SimBlkRequest? {
        let h = header(type: BlkRequestType.read, sector: sector)
        let data = memory.allocate(UInt64(length), alignment: 512)
        let s = status()
        var bufs = [SimBuffer(iova: h, length: 16, writable: false)]
        bufs += split(data, length, segments, writable: true)
        bufs.append(SimBuffer(iova: s, length: 1, writable: true))
        guard let head = driver.add(bufs, indirect: indirect) else { return nil }
        return SimBlkRequest(head: head, dataIOVA: data, dataLength: length, statusIOVA: s)
    }

    /// Writes `bytes` at `sector` from `segments` equal buffers.
    public func write(sector: UInt64, bytes: [UInt8], segments: Int = 1) -> SimBlkRequest? {
        let h = header(type: BlkRequestType.write, sector: sector)
        let data = memory.allocate(UInt64(bytes.count), alignment: 512)
        memory.write(bytes, at: data)
        let s = status()
        var bufs = [SimBuffer(iova: h, length: 16, writable: false)]
        bufs += split(data, UInt32(bytes.count), segments, writable: false)
        bufs.append(SimBuffer(iova: s, length: 1, writable: true))
        guard let head = driver.add(bufs, indirect: indirect) else { return nil }
        return SimBlkRequest(head: head, dataIOVA: data, dataLength: UInt32(bytes.count), statusIOVA: s)
    }

    /// A request with only a header and status (FLUSH, or an unknown type).
    public func bare(type: UInt32, sector: UInt64 = 0) -> SimBlkRequest? {
        let h = header(type: type, sector: sector)
        let s = status()
        guard let head = driver.add([SimBuffer(iova: h, length: 16, writable: false),
                                     SimBuffer(iova: s, length: 1, writable: true)], indirect: indirect)
        else { return nil }
        return SimBlkRequest(head: head, dataIOVA: 0, dataLength: 0, statusIOVA: s)
    }

    public func getID() -> SimBlkRequest? {
        let h = header(type: BlkRequestType.getID, sector: 0)
        let data = memory.allocate(20, alignment: 4)
        let s = status()
        guard let head = driver.add([SimBuffer(iova: h, length: 16, writable: false),
                                     SimBuffer(iova: data, length: 20, writable: true),
                                     SimBuffer(iova: s, length: 1, writable: true)], indirect: indirect)
        else { return nil }
        return SimBlkRequest(head: head, dataIOVA: data, dataLength: 20, statusIOVA: s)
    }

    /// DISCARD or WRITE_ZEROES of one range.
    public func range(type: UInt32, sector: UInt64, sectors: UInt32, flags: UInt32 = 0) -> SimBlkRequest? {
        let h = header(type: type, sector: 0)
        let seg = memory.allocate(16, alignment: 16)
        let p = memory.pointer(seg)
        p.storeBytes(of: sector.littleEndian, as: UInt64.self)
        p.storeBytes(of: sectors.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt32.self)
        let s = status()
        guard let head = driver.add([SimBuffer(iova: h, length: 16, writable: false),
                                     SimBuffer(iova: seg, length: 16, writable: false),
                                     SimBuffer(iova: s, length: 1, writable: true)], indirect: indirect)
        else { return nil }
        return SimBlkRequest(head: head, dataIOVA: seg, dataLength: 16, statusIOVA: s)
    }

    public func statusByte(_ r: SimBlkRequest) -> UInt8 {
        memory.pointer(r.statusIOVA).load(as: UInt8.self)
    }

    public func data(_ r: SimBlkRequest) -> [UInt8] { memory.read(r.dataIOVA, count: Int(r.dataLength)) }

    func split(_ iova: UInt64, _ length: UInt32, _ n: Int, writable: Bool) -> [SimBuffer] {
        let n = max(1, min(n, Int(length / 512)))
        let chunk = (length / UInt32(n)) / 512 * 512
        var out: [SimBuffer] = []
        var off: UInt32 = 0
        for i in 0..<n {
            let len = i == n - 1 ? length - off : chunk
            out.append(SimBuffer(iova: iova + UInt64(off), length: len, writable: writable))
            off += len
        }
        return out
    }
}
