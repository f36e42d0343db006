import ImageOverlay
import SystemSupport
import CZstd

/// Constants and limits of the image format (see docs/zstd-image-format.md).
public enum ImageLayout {
    /// Magic of a zstd data frame.
    public static let zstdFrameMagic: UInt32 = 0xFD2F_B528
    /// First of the 16 skippable-frame magics (0x184D2A50...0x184D2A5F).
    public static let skippableMagicBase: UInt32 = 0x184D_2A50
    /// The skippable frame holding the seek table (seekable format).
    public static let seekTableFrameMagic: UInt32 = 0x184D_2A5E
    /// The skippable frame holding our image header (first frame of the file).
    public static let headerFrameMagic: UInt32 = 0x184D_2A5A
    /// Last four bytes of a seekable stream.
    public static let seekableFooterMagic: UInt32 = 0x8F92_EAB1
    /// Skippable frame header: magic (4) + frame size (4).
    public static let skippableHeaderSize = 8
    /// Seek table footer: frame count (4) + descriptor (1) + magic (4).
    public static let seekTableFooterSize = 9
    /// One seek table entry with checksums: compressed (4), decompressed (4), checksum (4).
    public static let seekTableEntrySize = 12
    /// Seek table descriptor bit: entries carry checksums.
    public static let checksumFlag: UInt8 = 0x80
    /// Seek table descriptor bits that must be zero.
    public static let reservedDescriptorBits: UInt8 = 0x7C
    /// The seekable format's limit on the number of frames.
    public static let maxFrames = 0x800_0000

    public static let minChunkSize = 4096
    public static let maxChunkSize = 8 << 20
    public static let defaultChunkSize = 64 << 10

    /// Smallest possible zstd frame: magic, descriptor, one empty raw block.
    static let minFrameSize = 4 + 1 + 3

    /// Checks a chunk size: a power of two from 4 KiB to 8 MiB.
    public static func validateChunkSize(_ size: Int) throws(ImageError) {
        guard size >= minChunkSize, size <= maxChunkSize, size & (size - 1) == 0 else {
            throw .invalidArgument("chunk size \(size) must be a power of two from 4K to 8M")
        }
    }

    /// The most bytes a frame holding `chunkSize` bytes may take (compress bound
    /// plus header and checksum slack).
    static func maxFrameSize(chunkSize: Int) -> Int {
        ZSTD_compressBound(chunkSize) + 32
    }
}
