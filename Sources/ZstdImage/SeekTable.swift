import ImageOverlay
import SystemSupport

/// Where every chunk's frame lies in the image file and the checksum of its
/// uncompressed bytes, decoded and validated from the trailing seek table
/// (zstd seekable format, with checksums). Entry 0 of the on-disk table is the
/// header frame (decompressed size 0); chunk `i` is entry `i + 1`. Owns the
/// decoded arrays.
public struct SeekTable: Sendable {
    /// Offset of chunk i's frame; `offsets[chunkCount]` is where the seek table starts.
    public let offsets: [UInt64]
    /// Low 32 bits of XXH64 of chunk i's uncompressed bytes.
    public let checksums: [UInt32]

    public var chunkCount: Int { checksums.count }

    /// Compressed bytes of chunk i's frame.
    @inline(__always)
    public func frameSize(_ i: Int) -> Int { Int(offsets[i + 1] - offsets[i]) }

    /// Bytes of the seek table frame for `entries` entries.
    static func frameBytes(entries: Int) -> Int {
        ImageLayout.skippableHeaderSize + entries * ImageLayout.seekTableEntrySize + ImageLayout.seekTableFooterSize
    }

    /// Reads the 9-byte footer at the end of the file: the number of entries.
    static func entryCount(footer: [UInt8]) throws(ImageError) -> Int {
        var r = ByteReader(footer)
        guard footer.count == ImageLayout.seekTableFooterSize,
              let count = r.u32(), let descriptor = r.u8(), let magic = r.u32() else {
            throw .truncated("no room for the seek table footer")
        }
        guard magic == ImageLayout.seekableFooterMagic else {
            throw .badMagic(what: "seek table footer (last 4 bytes; truncated file?)",
                            expected: ImageLayout.seekableFooterMagic, found: magic)
        }
        guard descriptor & ImageLayout.reservedDescriptorBits == 0 else {
            throw .unsupported("seek table descriptor \(hex32(UInt32(descriptor))) sets reserved bits")
        }
        guard descriptor & ImageLayout.checksumFlag != 0 else {
            throw .unsupported("seek table without per-frame checksums")
        }
        guard Int(count) <= ImageLayout.maxFrames else {
            throw .seekTableOutOfBounds("\(count) frames exceed the seekable format's limit")
        }
        return Int(count)
    }

    /// Decodes and validates the whole seek table frame `frame` (found at the
    /// end of a `fileSize`-byte file) against `header`.
    static func decode(_ frame: [UInt8], header: ImageHeader, fileSize: UInt64) throws(ImageError) -> SeekTable {
        let entries = header.chunkCount + 1
        guard frame.count == frameBytes(entries: entries) else {
            throw .frameSizesInconsistent("seek table frame is \(frame.count) bytes, \(entries) entries need \(frameBytes(entries: entries))")
        }
        var r = ByteReader(frame)
        let magic = r.u32()!, size = r.u32()!
        guard magic == ImageLayout.seekTableFrameMagic else {
            throw .badMagic(what: "seek table frame", expected: ImageLayout.seekTableFrameMagic, found: magic)
        }
        guard Int(size) == frame.count - ImageLayout.skippableHeaderSize else {
            throw .frameSizesInconsistent("seek table frame declares \(size) bytes, its footer implies \(frame.count - ImageLayout.skippableHeaderSize)")
        }
        // Entry 0: the header frame.
        let headerC = r.u32()!, headerD = r.u32()!, headerSum = r.u32()!
        guard headerC == UInt32(ImageHeader.frameSize), headerD == 0,
              headerSum == UInt32(truncatingIfNeeded: XXH64.empty) else {
            throw .frameSizesInconsistent("seek table entry 0 (\(headerC) -> \(headerD) bytes) does not describe the \(ImageHeader.frameSize)-byte header frame")
        }
        let tableStart = fileSize - UInt64(frame.count)
        let maxFrame = UInt32(ImageLayout.maxFrameSize(chunkSize: header.chunkSize))
        var offsets = [UInt64]()
        var checksums = [UInt32]()
        offsets.reserveCapacity(entries)
        checksums.reserveCapacity(entries - 1)
        var position = UInt64(ImageHeader.frameSize)
        for i in 0..<header.chunkCount {
            let c = r.u32()!, d = r.u32()!, sum = r.u32()!
            let expected = header.chunkLength(i)
            if d > UInt32(header.chunkSize) {
                throw .chunkTooLarge(chunk: i, size: UInt64(d), limit: UInt64(header.chunkSize))
            }
            guard d == UInt32(expected) else {
                throw .frameSizesInconsistent("chunk \(i) declares \(d) bytes, the header implies \(expected)")
            }
            guard c >= UInt32(ImageLayout.minFrameSize), c <= maxFrame else {
                throw .frameSizesInconsistent("chunk \(i)'s frame is \(c) bytes, outside \(ImageLayout.minFrameSize)...\(maxFrame)")
            }
            offsets.append(position)
            checksums.append(sum)
            position += UInt64(c)
            if position > tableStart {
                throw .frameSizesInconsistent("chunk \(i)'s frame would end at \(position), past the seek table at \(tableStart)")
            }
        }
        guard position == tableStart else {
            throw .frameSizesInconsistent("frames end at \(position) but the seek table starts at \(tableStart)")
        }
        offsets.append(position)
        return SeekTable(offsets: offsets, checksums: checksums)
    }

    /// Appends entries and encodes the seek table frame (packer side).
    struct Builder {
        private var writer = ByteWriter()
        private var count = 0

        init(expectedChunks: Int) {
            writer = ByteWriter(capacity: SeekTable.frameBytes(entries: expectedChunks + 1))
            writer.u32(ImageLayout.seekTableFrameMagic)
            writer.u32(0)  // patched in `finish`
            add(compressed: UInt32(ImageHeader.frameSize), decompressed: 0,
                checksum: UInt32(truncatingIfNeeded: XXH64.empty))
        }

        mutating func add(compressed: UInt32, decompressed: UInt32, checksum: UInt32) {
            writer.u32(compressed)
            writer.u32(decompressed)
            writer.u32(checksum)
            count += 1
        }

        func finish() -> [UInt8] {
            var w = writer
            w.u32(UInt32(count))
            w.u8(ImageLayout.checksumFlag)
            w.u32(ImageLayout.seekableFooterMagic)
            var bytes = w.bytes
            let size = UInt32(bytes.count - ImageLayout.skippableHeaderSize)
            for i in 0..<4 { bytes[4 + i] = UInt8(truncatingIfNeeded: size >> (8 * UInt32(i))) }
            return bytes
        }
    }
}
