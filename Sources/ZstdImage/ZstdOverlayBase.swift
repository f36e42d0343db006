import ImageOverlay

extension OverlayBase {
    /// The base identity of a zstd seekable image (what its overlays record).
    public init(image: SeekableImage) {
        self.init(logicalSize: image.logicalSize, chunkSize: image.chunkSize,
                  contentDigest: image.header.contentDigest, name: image.path)
    }
}

extension Overlay {
    /// Opens the overlay at `path` for `image`, creating it if missing.
    static func open(path: String, image: SeekableImage) throws(ImageError) -> Overlay {
        try open(path: path, base: OverlayBase(image: image))
    }
}
