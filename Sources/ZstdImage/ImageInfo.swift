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
    public static func read(path: String) throws(ZstdImageError) -> ImageInfo {
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

/// "1.5 GiB"-style sizes.
public func humanBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : "\(formatFixed(value, 1)) \(units[unit])"
}

/// `value` with `digits` decimals, without Foundation.
public func formatFixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = UInt64(scaled / scale)
    var fraction = String(UInt64(scaled - Double(whole) * scale))
    while fraction.count < digits { fraction = "0" + fraction }
    return (value < 0 ? "-" : "") + "\(whole)" + (digits > 0 ? "." + fraction : "")
}
