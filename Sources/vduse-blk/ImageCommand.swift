import ImageOverlay
import SystemSupport
import ArgumentParser
import BlockBackends
import Glibc
import ZstdImage

/// `vduse-blk image`: make, inspect, check and unpack zstd seekable images
/// (the format served by `--backend zstd:`).
struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Make, inspect, check and unpack zstd seekable images.",
        subcommands: [Pack.self, Info.self, Verify.self, Unpack.self, BenchRead.self, BenchSeq.self])

    /// Runs `body`, turning image errors into one line on stderr and exit status 1.
    static func run(_ body: () throws(ImageError) -> Void) throws {
        do { try body() } catch {
            printError(error.description)
            throw ExitCode.failure
        }
    }

    struct Pack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compress a raw image into a zstd seekable image (stock `zstd -d` restores it).")

        @Argument(help: "The raw image (file or block device).")
        var raw: String
        @Argument(help: "The image to write (e.g. disk.zst).")
        var output: String
        @Option(name: .customLong("chunk-size"), help: "Uncompressed bytes per frame: a power of two, 4K-8M.")
        var chunkSize: String = "64K"
        @Option(help: "zstd compression level.")
        var level: Int32 = 3
        @Option(help: "Compression threads (default: online CPUs).")
        var threads: Int?
        @Flag(help: "Replace an existing output file.")
        var force = false

        func run() throws {
            let chunk: UInt64
            do { chunk = try ByteSize.parse(chunkSize) } catch { throw ValidationError(error.description) }
            let options = PackOptions(chunkSize: Int(min(chunk, UInt64(Int32.max))), level: level,
                                      threads: threads ?? PackOptions.onlineCPUs, overwrite: force)
            try ImageCommand.run { () throws(ImageError) in
                let bar = ProgressBar(label: "pack")
                defer { bar.finish() }
                let r = try ImagePacker.pack(raw: raw, output: output, options: options, progress: bar.update)
                bar.finish()
                let rate = Double(r.header.logicalSize) / max(r.seconds, 1e-9)
                print("\(output): \(humanBytes(r.header.logicalSize)) -> \(humanBytes(r.fileSize)) "
                      + "(ratio \(formatFixed(r.ratio, 2)):1), \(r.header.chunkCount) chunks of "
                      + "\(humanBytes(UInt64(r.header.chunkSize))), \(r.zeroChunks) zero, "
                      + "\(formatFixed(r.seconds, 2)) s, \(humanBytes(UInt64(rate)))/s")
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an image's sizes, ratio and chunking.")

        @Argument(help: "The zstd image.")
        var image: String

        func run() throws {
            try ImageCommand.run { () throws(ImageError) in
                for line in try ImageInfo.read(path: image).lines { print(line) }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decompress every chunk and check its checksum and the content digest.")

        @Argument(help: "The zstd image.")
        var image: String

        func run() throws {
            try ImageCommand.run { () throws(ImageError) in
                let bar = ProgressBar(label: "verify")
                defer { bar.finish() }
                let r = try ImageVerifier.verify(path: image, progress: bar.update)
                bar.finish()
                print("\(image): OK, \(r.chunks) chunks, \(humanBytes(r.logicalSize)), digest "
                      + "0x\(String(r.contentDigest, radix: 16, uppercase: true)), \(formatFixed(r.seconds, 2)) s")
            }
        }
    }

    struct Unpack: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Decompress an image back into a (sparse) raw image.")

        @Argument(help: "The zstd image.")
        var image: String
        @Argument(help: "The raw image to write.")
        var output: String
        @Flag(help: "Replace an existing output file.")
        var force = false

        func run() throws {
            try ImageCommand.run { () throws(ImageError) in
                let bar = ProgressBar(label: "unpack")
                defer { bar.finish() }
                let r = try ImageVerifier.unpack(path: image, output: output, overwrite: force, progress: bar.update)
                bar.finish()
                print("\(output): \(humanBytes(r.logicalSize)), verified, \(formatFixed(r.seconds, 2)) s")
            }
        }
    }

    /// Hidden: 4 KiB random-read IOPS of the zstd backend (cold and warm chunk
    /// cache) against the sync file backend on the raw image it was packed from.
    struct BenchRead: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-read", abstract: "Random-read IOPS: zstd backend vs file backend.",
            shouldDisplay: false)

        @Argument(help: "The zstd image.")
        var image: String
        @Argument(help: "The raw image it was packed from.")
        var raw: String
        @Option(help: "Seconds per measurement.")
        var seconds: Double = 3
        @Option(help: "Queue threads.")
        var queues: Int = 1
        @Option(help: "Reads prepared per submit.")
        var depth: Int = 16

        func validate() throws {
            // 0 queues or depth trapped; NaN or infinite seconds never ended.
            guard seconds.isFinite, (0.1...3600).contains(seconds) else {
                throw ValidationError("--seconds must be 0.1-3600")
            }
            guard (1...64).contains(queues) else { throw ValidationError("--queues must be 1-64") }
            guard (1...1024).contains(depth) else { throw ValidationError("--depth must be 1-1024") }
        }

        func run() throws {
            do {
                let file = try FileBackendFactory(path: raw, readOnly: true, engine: .sync)
                try ReadBenchmark.readAll(factory: file)  // page cache warm
                let fileRun = try ReadBenchmark.randomReads(factory: file, seconds: seconds, queues: queues, depth: depth)
                // Cold, inline: no cache, every read decompresses its chunk on the queue thread.
                let cold = try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, cacheBytes: 0,
                                                                              readahead: false))
                let coldRun = try ReadBenchmark.randomReads(factory: cold, seconds: seconds, queues: queues, depth: depth)
                let size = cold.image.logicalSize
                let chunk = UInt64(cold.image.chunkSize)
                // Cold, pool: a cache of a few chunks per read in flight (nearly every read misses),
                // misses decoded by the decompression pool while the reads park.
                let poolChunks = UInt64(max(DecompressionPool.minimumCacheChunks * 4, 4 * queues * depth))
                let pooled = try ZstdBackendFactory(options: ZstdBackendOptions(
                    imagePath: image, cacheBytes: poolChunks * chunk, readahead: false))
                let pooledRun = try ReadBenchmark.randomReads(factory: pooled, seconds: seconds, queues: queues, depth: depth)
                let pooledDecodes = pooled.poolStatistics.decoded
                let warm = try ZstdBackendFactory(options: ZstdBackendOptions(
                    imagePath: image, cacheBytes: size + chunk * 64, readahead: false))
                try ReadBenchmark.readAll(factory: warm)
                let warmRun = try ReadBenchmark.randomReads(factory: warm, seconds: seconds, queues: queues, depth: depth)
                let decodeRate = try ReadBenchmark.singleThreadDecodeRate(image: cold.image)
                let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
                let bound = decodeRate * Double(cores)
                func line(_ name: String, _ r: ReadBenchmark.Result) -> String {
                    let ratio = r.iops / max(fileRun.iops, 1e-9)
                    return "\(name) \(formatFixed(r.iops / 1000, 1))k IOPS  (\(formatFixed(ratio, 3))x file)"
                        + (r.failures > 0 ? "  \(r.failures) FAILED" : "")
                }
                print("4 KiB random reads, \(queues) queue(s), depth \(depth), \(formatFixed(seconds, 1)) s each, "
                      + "chunk \(humanBytes(chunk)), image \(humanBytes(size))")
                print(line("file (sync, page cache):", fileRun))
                print(line("zstd cold (inline):     ", coldRun))
                print(line("zstd cold (pool):       ", pooledRun)
                      + "  \(pooled.pool?.threadCount ?? 0) decode threads, cache \(humanBytes(poolChunks * chunk)), "
                      + "\(formatFixed(Double(pooledDecodes) / Double(max(pooledRun.reads, 1)), 2)) decodes per read")
                print(line("zstd warm (all cached): ", warmRun))
                print("decompression: \(formatFixed(decodeRate, 0)) chunks/s on one thread "
                      + "(\(formatFixed(decodeRate * Double(chunk) / 1048576, 0)) MiB/s); bound with \(cores) cores "
                      + "\(formatFixed(bound / 1000, 1))k chunks/s; cold inline \(formatFixed(coldRun.iops / bound, 3))x, "
                      + "cold pool \(formatFixed(pooledRun.iops / bound, 3))x of the bound")
            } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        }
    }
}
