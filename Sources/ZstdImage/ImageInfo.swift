import ImageOverlay
import SystemSupport

/// A summary of an image for `vduse-blk image info`: sizes, ratio, chunking,
/// digest. Computed from the header and seek table alone (no decompression).
public struct ImageInfo: Sendable, Equatable {
    public var path: String
    public var logicalSize: UInt64
    public var fileSize: UInt64
    public var chunkSize: Int
    public var chunkCount: Int
    public var level: Int32
    public var contentDigest: UInt64
    /// Largest and smallest compressed frame.
    public var largestFrame: Int
    public var smallestFrame: Int

    /// Raw bytes per image byte.
    public var ratio: Double { Double(logicalSize) / Double(max(fileSize, 1)) }

    public init(image: SeekableImage) {
        path = image.path
        logicalSize = image.logicalSize
        fileSize = image.fileSize
        chunkSize = image.chunkSize
        chunkCount = image.chunkCount
        level = image.header.level
        contentDigest = image.header.contentDigest
        var largest = 0, smallest = Int.max
        for i in 0..<image.chunkCount {
            let size = image.table.frameSize(i)
            largest = max(largest, size)
            smallest = min(smallest, size)
        }
        largestFrame = largest
        smallestFrame = image.chunkCount == 0 ? 0 : smallest
    }

    /// Opens the image at `path` (validating header and seek table) and summarises it.
    public static func read(path: String) throws(ImageError) -> ImageInfo {
        ImageInfo(image: try SeekableImage.open(path: path))
    }

    /// Lines for a terminal.
    public var lines: [String] {
        [
            "image:        \(path)",
            "raw size:     \(logicalSize) bytes (\(humanBytes(logicalSize)))",
            "file size:    \(fileSize) bytes (\(humanBytes(fileSize)))",
            "ratio:        \(formatFixed(ratio, 2)):1",
            "chunk size:   \(chunkSize) bytes (\(humanBytes(UInt64(chunkSize))))",
            "chunks:       \(chunkCount) (frames \(smallestFrame)...\(largestFrame) bytes)",
            "level:        \(level)",
            "digest:       \(hex64(contentDigest))",
        ]
    }
}

