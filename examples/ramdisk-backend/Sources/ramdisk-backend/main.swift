import Glibc
import VDUSEBlk

// ramdisk-backend NAME ram:SIZE[,latency-us=N] [--attach]   serve /dev/vduse/NAME until SIGINT/SIGTERM
// ramdisk-backend --self-test                                drive the backend without a kernel
let arguments = Array(CommandLine.arguments.dropFirst())
let catalog = BackendCatalog([RamDiskProvider()])

func fail(_ message: String, status: Int32 = 1) -> Never {
    let line = "ramdisk-backend: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(status)
}

if arguments == ["--self-test"] {
    do {
        let disk = try catalog.open("ram:1M,latency-us=10", options: BackendOpenOptions())
        let queue = try disk.makeQueueBackend(queueIndex: 0, depth: 4)
        var out = [UInt8](repeating: 0xA5, count: 4096), back = [UInt8](repeating: 0, count: 4096)
        var results = [IOCompletion](repeating: IOCompletion(tag: 0, result: 0), count: 4)
        out.withUnsafeMutableBytes { o in
            back.withUnsafeMutableBytes { b in
                var w = iovec(iov_base: o.baseAddress, iov_len: o.count), r = iovec(iov_base: b.baseAddress, iov_len: b.count)
                queue.prepareWrite(offset: 8192, iovecs: &w, count: 1, tag: 1)
                queue.prepareRead(offset: 8192, iovecs: &r, count: 1, tag: 2)
                queue.prepareRead(offset: 1 << 20, iovecs: &r, count: 1, tag: 3)  // past the end
                queue.submit()
            }
        }
        let n = results.withUnsafeMutableBufferPointer { queue.reap(into: $0) }
        guard n == 3, results[0].result == 4096, results[1].result == 4096, results[2].result == -EIO, out == back else {
            fail("self-test failed: \(results.prefix(n))")
        }
        print("self-test passed: \(disk.summary)")
        exit(0)
    } catch {
        fail("self-test: \(error)")
    }
}

guard arguments.count >= 2, arguments.count <= 3, arguments.count == 2 || arguments[2] == "--attach" else {
    fail("usage: ramdisk-backend NAME ram:SIZE[,latency-us=N] [--attach] | --self-test", status: 64)
}
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGINT)
sigaddset(&signals, SIGTERM)
pthread_sigmask(SIG_BLOCK, &signals, nil)  // before any thread starts: only sigwait takes them
let logger = Logger(label: "ramdisk")
do {
    let disk = try catalog.open(arguments[1], options: BackendOpenOptions(logger: logger))
    let parameters = BlkDeviceParameters(capacityBytes: disk.geometry.capacityBytes, serial: arguments[0],
                                         numQueues: 2, discard: true, writeZeroes: true)
    let device = try VDUSEBlockDevice(name: arguments[0], parameters: parameters, backend: disk, logger: logger)
    try device.create()
    if arguments.count == 3 { try device.attach() }
    var signal: Int32 = 0
    sigwait(&signals, &signal)
    device.shutdown()
} catch {
    fail("\(error)")
}
