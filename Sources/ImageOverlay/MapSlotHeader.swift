import BlockBackends
import SystemSupport

/// Why an on-disk map slot cannot be trusted.
public struct MapSlotDamage: Error, Equatable {
    public var reason: String
}

/// The header of one allocation-map slot plus its page checksum table:
/// magic, generation, page count, slot index, XXH64 of the table, XXH64 of
/// the header. A value; `encode` writes it into a caller's buffer.
public struct MapSlotHeader: Equatable {
    public static let magic: [UInt8] = Array("VBZMAP01".utf8)
    public static let checkedSize = 56

    public var generation: UInt64
    public var slot: Int
    /// XXH64 of each 4 KiB map page in this slot.
    public var table: [UInt64]

    public func encoded(region: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: region)
        bytes.withUnsafeMutableBytes { b in
            Self.encode(generation: generation, slot: slot, table: table, into: b.baseAddress!, region: region)
        }
        return bytes
    }

    /// Writes header and table into `buffer` (`region` bytes, zero-padded).
    public static func encode(generation: UInt64, slot: Int, table: [UInt64], into buffer: UnsafeMutableRawPointer,
                       region: Int) {
        memsetZero(buffer, region)
        for (i, b) in magic.enumerated() { buffer.storeBytes(of: b, toByteOffset: i, as: UInt8.self) }
        buffer.storeBytes(of: generation.littleEndian, toByteOffset: 8, as: UInt64.self)
        buffer.storeBytes(of: UInt32(table.count).littleEndian, toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: UInt32(slot).littleEndian, toByteOffset: 20, as: UInt32.self)
        let tableStart = OverlayLayout.slotHeaderSize
        for (i, sum) in table.enumerated() {
            buffer.storeBytes(of: sum.littleEndian, toByteOffset: tableStart + 8 * i, as: UInt64.self)
        }
        let tableSum = XXH64.hash(UnsafeRawBufferPointer(start: buffer + tableStart, count: 8 * table.count))
        buffer.storeBytes(of: tableSum.littleEndian, toByteOffset: 24, as: UInt64.self)
        let headerSum = XXH64.hash(UnsafeRawBufferPointer(start: buffer, count: checkedSize))
        buffer.storeBytes(of: headerSum.littleEndian, toByteOffset: checkedSize, as: UInt64.self)
    }

    /// Parses and checks a slot's header region (untrusted bytes).
    /// Slots at or above this generation are damaged; a flush never writes one.
    public static let generationLimit: UInt64 = 1 << 48

    public static func decode(_ bytes: [UInt8], slot: Int, pageCount: Int) -> Result<MapSlotHeader, MapSlotDamage> {
        guard bytes.count >= OverlayLayout.slotHeaderSize + 8 * pageCount else {
            return .failure(MapSlotDamage(reason: "header region too short"))
        }
        var r = ByteReader(bytes)
        guard r.take(8)! == magic else { return .failure(MapSlotDamage(reason: "bad magic")) }
        let generation = r.u64()!, pages = r.u32()!, index = r.u32()!, tableSum = r.u64()!
        var tail = ByteReader(bytes, offset: checkedSize)
        let headerSum = tail.u64()!
        guard headerSum == XXH64.hash(Array(bytes[0..<checkedSize])) else {
            return .failure(MapSlotDamage(reason: "header checksum mismatch (torn write)"))
        }
        guard Int(pages) == pageCount, Int(index) == slot else {
            return .failure(MapSlotDamage(reason: "header describes \(pages) pages in slot \(index)"))
        }
        // One generation per flush: 2^48 is beyond any real overlay. A slot
        // claiming more is damaged (fuzz-overlay: UInt64.max trapped on the
        // next flush's + 1; UInt64.max - 1 made that flush write a slot no
        // open would accept, so the write was lost on reopen).
        guard generation < Self.generationLimit else {
            return .failure(MapSlotDamage(reason: "generation \(generation) is beyond any real number of flushes"))
        }
        let tableBytes = Array(bytes[OverlayLayout.slotHeaderSize..<(OverlayLayout.slotHeaderSize + 8 * pageCount)])
        guard XXH64.hash(tableBytes) == tableSum else {
            return .failure(MapSlotDamage(reason: "generation \(generation), page checksum table mismatch (torn write)"))
        }
        var t = ByteReader(tableBytes)
        let table = (0..<pageCount).map { _ in t.u64()! }
        return .success(MapSlotHeader(generation: generation, slot: slot, table: table))
    }
}

@inline(__always)
public func memsetZero(_ p: UnsafeMutableRawPointer, _ count: Int) {
    p.initializeMemory(as: UInt8.self, repeating: 0, count: count)
}
