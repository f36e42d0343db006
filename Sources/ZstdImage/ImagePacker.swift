import ImageOverlay
import SystemSupport
import Glibc

/// Turns a raw image into a zstd seekable image (see docs/zstd-image-format.md):
/// a header frame, one independent zstd frame per chunk (compressed by
/// `options.threads` threads; all-zero chunks get a canned frame without
/// compressing), then the seek table. Writes to `OUT.partial` and renames it
/// into place once complete and synced, so a failed pack leaves no image.
public enum ImagePacker {
    /// Packs `raw` into `output`. `progress(done, total)` is called on the
    /// calling thread after every chunk written.
    public static func pack(raw: String, output: String, options: PackOptions = PackOptions(),
                            progress: ((UInt64, UInt64) -> Void)? = nil) throws(ImageError) -> PackResult {
        try options.validate()
        let started = monotonicSeconds()
        let input = try PosixFile.open(raw, flags: O_RDONLY)
        let logicalSize = try input.size()
        guard logicalSize > 0 else { throw .invalidArgument("\(raw) is empty: nothing to pack") }
        let chunks = (logicalSize + UInt64(options.chunkSize) - 1) / UInt64(options.chunkSize)
        guard chunks < UInt64(ImageLayout.maxFrames) else {
            throw .invalidArgument("\(chunks) chunks exceed the seekable format's \(ImageLayout.maxFrames) frames; use a larger chunk size")
        }
        if access(output, F_OK) == 0 {
            guard options.overwrite else { throw .invalidArgument("\(output) exists (overwrite it with --force)") }
            if try sameFile(raw, output) { throw .invalidArgument("\(output) is the raw image itself") }
        }
        let partial = output + ".partial"
        let out = try PosixFile.open(partial, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do throws(ImageError) {
            let result = try write(input: input, logicalSize: logicalSize, to: out, options: options,
                                   started: started, progress: progress)
            try out.sync()
            try PosixFile.rename(partial, to: output)
            try PosixFile.syncDirectory(of: output)
            return result
        } catch {
            unlink(partial)
            throw error
        }
    }

    private static func write(input: PosixFile, logicalSize: UInt64, to out: PosixFile, options: PackOptions,
                              started: Double, progress: ((UInt64, UInt64) -> Void)?) throws(ImageError) -> PackResult {
        let pipeline = PackPipeline(input: input, logicalSize: logicalSize, options: options)
        var header = ImageHeader(logicalSize: logicalSize, chunkSize: options.chunkSize, level: options.level,
                                 contentDigest: 0)
        let writer = OutputBuffer(file: out, start: 0)
        try writer.append(header.encodedFrame())  // rewritten with the digest at the end

        var threads: [NamedThread] = []
        for _ in 0..<min(options.threads, pipeline.chunkCount) {
            do {
                threads.append(try NamedThread { pipeline.work() })
            } catch {
                pipeline.fail(ImageError(error))
                break
            }
        }
        defer {
            for thread in threads { thread.join() }
        }
        var table = SeekTable.Builder(expectedChunks: pipeline.chunkCount)
        var digest = XXH64.State()
        var zeroChunks = 0
        var done: UInt64 = 0
        do throws(ImageError) {
            for k in 0..<pipeline.chunkCount {
                let slot = try pipeline.take(k)
                try writer.append(slot.frame, count: slot.length)
                let length = pipeline.chunkLength(k)
                table.add(compressed: UInt32(slot.length), decompressed: UInt32(length),
                          checksum: UInt32(truncatingIfNeeded: slot.hash))
                digest.update(slot.hash)
                if slot.zero { zeroChunks += 1 }
                pipeline.release(k)
                done += UInt64(length)
                progress?(done, logicalSize)
            }
        } catch {
            pipeline.fail(error)
            throw error
        }
        try writer.append(table.finish())
        try writer.flush()
        let fileSize = writer.position
        header.contentDigest = digest.digest()
        try out.write(header.encodedFrame(), at: 0)
        return PackResult(header: header, fileSize: fileSize, zeroChunks: zeroChunks,
                          seconds: monotonicSeconds() - started)
    }

    private static func sameFile(_ a: String, _ b: String) throws(ImageError) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}
