import SystemSupport
import ArgumentParser
import BlockBackends
import Glibc
import Logging
import RemoteImage
import StandardBackends

extension ImageCommand {
    /// `vduse-blk image bench-seq BACKEND`: whole-image sequential read
    /// throughput of any backend spec, pass after pass (the first pass of a
    /// remote image with an empty cache is the cold one). Hidden: a benchmark aid.
    struct BenchSeq: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-seq", abstract: "Sequential read MiB/s of a backend, pass by pass.", shouldDisplay: false)

        @Argument(help: "A --backend spec (file:, zstd:, http(s)://, s3://).")
        var backend: String
        @Option(help: "Bytes per read.")
        var block: String = "1M"
        @Option(help: "Reads in flight.")
        var depth: Int = 1
        @Option(help: "Passes over the whole image.")
        var passes: Int = 2

        func run() throws {
            do throws(BackendError) {
                let block = try ByteSize.parse(self.block)
                guard block >= 512, block <= 64 << 20, (1...256).contains(depth), (1...100).contains(passes) else {
                    throw BackendError.invalidSpec("--block 512..64M, --depth 1..256, --passes 1..100")
                }
                let factory = try BackendCatalog.standard.open(
                    backend, options: BackendOpenOptions(readOnly: true, engine: .uring, logger: Logger(label: "bench")))
                factory.startBackgroundWork()
                for pass in 1...passes {
                    guard let rate = try SequentialReadBenchmark.run(factory: factory, blockSize: Int(block), depth: depth) else {
                        throw BackendError.invalidSpec("a read failed in pass \(pass)")
                    }
                    print("pass \(pass): \(formatFixed(rate / 1048576, 1)) MiB/s")
                }
                factory.shutdown()
                for (k, v) in factory.statistics() ?? [] where v > 0 { print("  \(k) \(v)") }
            } catch {
                printError(error.description)
                throw ExitCode.failure
            }
        }
    }
}
