import ZstdImage

/// Where a zstd image's frames lie in the remote object it is served as.
extension SeekableImage {
    /// The remote object's chunks (of `1 << shift` bytes) that hold chunk `index`'s frame.
    func objectChunks(ofFrame index: Int, shift: Int) -> ClosedRange<Int> {
        let first = table.offsets[index]
        let end = first + UInt64(table.frameSize(index))
        return Int(first >> UInt64(shift))...Int((max(end, first + 1) - 1) >> UInt64(shift))
    }
}
