import SystemSupport
import CSys
import Glibc

#if FUZZING
/// libFuzzer's driver (compiler-rt's `libclang_rt.fuzzer_no_main`), linked by
/// scripts/fuzz.sh: SwiftPM executables bring their own `main`, so instead of
/// libFuzzer's `main` calling `LLVMFuzzerTestOneInput`, our `main` hands the
/// entry point to libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif

/// The `main` of every fuzz-* executable. Built by scripts/fuzz.sh (with
/// `-DFUZZING`, `-sanitize=fuzzer` instrumentation and libFuzzer linked) it is
/// a libFuzzer binary taking libFuzzer's flags. Built plainly (`swift build`)
/// it replays inputs: every file named, and every file in every folder named,
/// runs once through the target; a violated invariant traps.
public enum FuzzMain {
    nonisolated(unsafe) static var target: ((UnsafeRawBufferPointer) -> Void)?

    public static func run(_ name: String, _ body: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
        target = body
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            FuzzMain.target!(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        })
        #else
        let paths = CommandLine.arguments.dropFirst()
        if paths.isEmpty || paths.contains(where: { $0.hasPrefix("-") }) {
            print("usage: fuzz-\(name) FILE|DIR...   (replays inputs; scripts/fuzz.sh builds the libFuzzer binary)")
            exit(paths.isEmpty ? 2 : 0)
        }
        // FUZZ_SLOW_MS=N: name every input that takes longer than N ms.
        let slowMs = getenv("FUZZ_SLOW_MS").flatMap { Double(String(cString: $0)) }
        var count = 0
        for path in paths {
            for file in files(path) {
                guard let bytes = readFile(file) else {
                    print("cannot read \(file)")
                    exit(1)
                }
                var t0 = timespec(), t1 = timespec()
                clock_gettime(CLOCK_MONOTONIC, &t0)
                bytes.withUnsafeBytes { body($0) }
                clock_gettime(CLOCK_MONOTONIC, &t1)
                let ms = Double(t1.tv_sec - t0.tv_sec) * 1e3 + Double(t1.tv_nsec - t0.tv_nsec) / 1e6
                if let slowMs, ms > slowMs { print("slow: \(file) \(ms) ms") }
                count += 1
            }
        }
        print("fuzz-\(name): \(count) input(s) replayed, no invariant violated")
        exit(0)
        #endif
    }

    /// `path` itself, or the regular files directly inside it, sorted.
    public static func files(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [path] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = String(cString: vb_dirent_name(entry))
            if name.hasPrefix(".") { continue }
            var st = stat()
            let full = path + "/" + name
            if stat(full, &st) == 0, st.st_mode & S_IFMT == S_IFREG { out.append(full) }
        }
        return out.sorted()
    }

    public static func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { return out }
            out += buffer[0..<n]
        }
    }
}
