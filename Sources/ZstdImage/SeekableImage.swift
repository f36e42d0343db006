import ImageOverlay
import SystemSupport
import Glibc

/// An opened, validated zstd seekable image: its header, its seek table and
/// the read-only source (a file, or a cached remote object) they came from. Opening checks everything that can be
/// checked without decompressing (magics, the header checksum, that the seek
/// table lies inside the file and that the frame sizes add up exactly to the
/// file); frames themselves are checked by `ChunkDecoder` when read. Never
/// reads outside the file; every allocation is bounded by the file's size.
/// Immutable after `open`, so shared by all queues of a device.
public final class SeekableImage: Sendable {
    public let path: String
    public let header: ImageHeader
    public let table: SeekTable
    /// Bytes of the image file.
    public let fileSize: UInt64
    /// Where frames are read from (shared by every queue's decoder unless it brings its own).
    public let source: any ImageByteSource

    public var logicalSize: UInt64 { header.logicalSize }
    public var chunkSize: Int { header.chunkSize }
    public var chunkCount: Int { header.chunkCount }

    private init(path: String, header: ImageHeader, table: SeekTable, fileSize: UInt64, source: any ImageByteSource) {
        self.path = path
        self.header = header
        self.table = table
        self.fileSize = fileSize
        self.source = source
    }

    /// Opens and validates the image at `path`.
    public static func open(path: String) throws(ImageError) -> SeekableImage {
        try open(source: FileByteSource(file: PosixFile.openImage(path, flags: O_RDONLY)))
    }

    /// Opens and validates the image held by `source` (reads its header and seek table).
    public static func open(source: any ImageByteSource) throws(ImageError) -> SeekableImage {
        let path = source.sourceName
        let fileSize = source.byteCount
        let minimum = UInt64(ImageHeader.frameSize + SeekTable.frameBytes(entries: 1))
        guard fileSize >= minimum else {
            throw .truncated("\(path) is \(fileSize) bytes, an image needs at least \(minimum)")
        }
        let header = try ImageHeader.decode(try source.readBytes(count: ImageHeader.frameSize, at: 0))
        let footerSize = UInt64(ImageLayout.seekTableFooterSize)
        let entries = try SeekTable.entryCount(footer: try source.readBytes(count: Int(footerSize),
                                                                      at: fileSize - footerSize))
        let tableBytes = UInt64(SeekTable.frameBytes(entries: entries))
        guard tableBytes <= fileSize - UInt64(ImageHeader.frameSize) else {
            throw .seekTableOutOfBounds("\(entries) entries need \(tableBytes) bytes, the file holds \(fileSize) including the header")
        }
        guard entries == header.chunkCount + 1 else {
            throw .frameSizesInconsistent("the seek table lists \(entries) frames, the header implies \(header.chunkCount + 1)")
        }
        let table = try SeekTable.decode(try source.readBytes(count: Int(tableBytes), at: fileSize - tableBytes),
                                         header: header, fileSize: fileSize)
        return SeekableImage(path: path, header: header, table: table, fileSize: fileSize, source: source)
    }

    /// Index of the chunk holding byte `offset` of the raw image.
    @inline(__always)
    public func chunk(containing offset: UInt64) -> Int {
        Int(offset >> UInt64(chunkSize.trailingZeroBitCount))
    }

    /// Byte offset in the raw image where chunk `index` starts.
    @inline(__always)
    public func chunkStart(_ index: Int) -> UInt64 { UInt64(index) << UInt64(chunkSize.trailingZeroBitCount) }
}
