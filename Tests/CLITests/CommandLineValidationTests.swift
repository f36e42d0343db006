import ArgumentParser
import XCTest

@testable import vduse_blk

/// Arguments are input from outside: each out-of-range or malformed value
/// must end in a usage error that names the option (exit code 64), before
/// anything is opened or created, never in a trap.
final class CommandLineValidationTests: XCTestCase {
    func assertRejected(_ arguments: [String], _ expected: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        do {
            let command = try VduseBlk.parseAsRoot(arguments)
            XCTFail("accepted \(arguments) as \(type(of: command))", file: file, line: line)
        } catch {
            let message = VduseBlk.message(for: error)
            XCTAssertTrue(message.contains(expected), "\(arguments): \"\(message)\" lacks \"\(expected)\"",
                          file: file, line: line)
            XCTAssertEqual(VduseBlk.exitCode(for: error), .validationFailure, "\(arguments)", file: file, line: line)
        }
    }

    func create(_ extra: [String], name: String = "disk0") -> [String] {
        ["create", name, "--backend", "file:/tmp/disk.img"] + extra
    }

    func testValidCreateParsesWithItsDefaultsAndLimits() throws {
        let plain = try XCTUnwrap(try VduseBlk.parseAsRoot(create([])) as? CreateCommand)
        XCTAssertEqual(plain.bounce, "kernel")
        XCTAssertEqual(plain.wait, "poll")
        XCTAssertEqual(plain.queueSize, 256)
        XCTAssertEqual(plain.blockSize, 512)
        XCTAssertNil(plain.queues)
        let edges = try XCTUnwrap(try VduseBlk.parseAsRoot(create([
            "--bounce", "user", "--queues", "16", "--queue-size", "1024", "--block-size", "4096",
            "--serial", String(repeating: "s", count: 20), "--wait", "ring", "--poll-us", "1000000",
            "--engine", "aio", "--log-level", "error",
        ], name: String(repeating: "n", count: 31))) as? CreateCommand)
        XCTAssertEqual(edges.bounce, "user")
        XCTAssertEqual(edges.queues, 16)
        XCTAssertEqual(edges.queueSize, 1024)
        XCTAssertEqual(edges.pollMicros, 1_000_000)
        let small = try XCTUnwrap(try VduseBlk.parseAsRoot(create(["--queues", "1", "--queue-size", "2"])) as? CreateCommand)
        XCTAssertEqual(small.queueSize, 2)
    }

    /// The benchmark switch of issue 14's A/B is off unless asked for, and
    /// hidden from `create --help` (it makes a device that cannot be adopted).
    func testNoInflightLogIsAnOffByDefaultHiddenBenchmarkFlag() throws {
        let plain = try XCTUnwrap(try VduseBlk.parseAsRoot(create([])) as? CreateCommand)
        XCTAssertFalse(plain.noInflightLog)
        let off = try XCTUnwrap(try VduseBlk.parseAsRoot(create(["--no-inflight-log"])) as? CreateCommand)
        XCTAssertTrue(off.noInflightLog)
        XCTAssertFalse(CreateCommand.helpMessage().contains("inflight"))
        assertRejected(create(["--no-inflight-log=yes"]), "no-inflight-log")
    }

    func testCreateRejectsOutOfRangeAndUnknownValues() {
        assertRejected(create(["--bounce", "bogus"]), "--bounce must be kernel or user")
        assertRejected(create(["--bounce", ""]), "--bounce must be kernel or user")
        assertRejected(create(["--bounce", "User"]), "--bounce must be kernel or user")
        assertRejected(create(["--queues", "0"]), "--queues must be 1-16")
        assertRejected(create(["--queues", "17"]), "--queues must be 1-16")
        assertRejected(create(["--queues=-1"]), "--queues must be 1-16")
        assertRejected(create(["--queues", "99999999999999999999"]), "queues")
        for size in ["0", "1", "3", "48", "2048", "65536", "-4"] {
            assertRejected(create(["--queue-size=\(size)"]), "--queue-size must be a power of two from 2 to 1024")
        }
        for size in ["0", "1024", "513", "8192"] {
            assertRejected(create(["--block-size", size]), "--block-size must be 512 or 4096")
        }
        assertRejected(create(["--block-size", "4294967296"]), "block-size")
        assertRejected(create(["--serial", String(repeating: "s", count: 21)]), "--serial must be at most 20")
        assertRejected(create(["--serial", "line\nbreak"]), "--serial must be at most 20")
        assertRejected(create(["--serial", "sérial"]), "--serial must be at most 20")
        assertRejected(create(["--engine", "io_uring"]), "--engine must be uring, aio or sync")
        assertRejected(create(["--wait", "spin"]), "--wait must be ring or poll")
        assertRejected(create(["--poll-us=-1"]), "--poll-us must be 0-1000000")
        assertRejected(create(["--poll-us", "1000001"]), "--poll-us must be 0-1000000")
        assertRejected(create(["--log-level", "verbose"]), "unknown --log-level verbose")
        assertRejected(["create", "disk0"], "--backend")
    }

    /// Names become paths (/dev/vduse/NAME, /run/vduse-blk/NAME.stats): every
    /// command that takes one refuses those that could leave the directory.
    func testEveryCommandRefusesDeviceNamesThatAreNotPlainFileNames() {
        let hostile = ["a/b", "../x", "/etc/passwd", ".", "..", "control", "", "with space", "tab\t",
                       "new\nline", "ünï", String(repeating: "x", count: 64)]
        for name in hostile {
            assertRejected(create([], name: name), "name")
            assertRejected(["stats", name], "name")
            assertRejected(["destroy", name], "name")
            assertRejected(["resize", name, "1G"], "name")
        }
    }

    func testResizeStatsListAndDestroyOptions() throws {
        assertRejected(["resize", "disk0", "lots"], "SIZE")
        assertRejected(["resize", "disk0", "0"], "SIZE must be a positive multiple of 512")
        assertRejected(["resize", "disk0", "1000"], "SIZE must be a positive multiple of 512")
        assertRejected(["resize", "disk0"], "size")
        assertRejected(["destroy", "disk0", "--timeout", "0"], "--timeout must be 1-600")
        assertRejected(["destroy", "disk0", "--timeout", "601"], "--timeout must be 1-600")
        let r = try XCTUnwrap(try VduseBlk.parseAsRoot(["resize", "disk0", "20G", "--shrink"]) as? ResizeCommand)
        XCTAssertTrue(r.shrink)
        XCTAssertEqual(r.size, "20G")
        XCTAssertTrue(try XCTUnwrap(try VduseBlk.parseAsRoot(["stats", "disk0", "--json"]) as? StatsCommand).json)
        XCTAssertTrue(try XCTUnwrap(try VduseBlk.parseAsRoot(["list", "--json"]) as? ListCommand).json)
        XCTAssertEqual(try XCTUnwrap(try VduseBlk.parseAsRoot(["destroy", "disk0"]) as? DestroyCommand).timeout, 30)
    }

    /// The README's contract: every error is one line, `vduse-blk: ...`;
    /// usage errors exit 64 and point at --help, all others exit 1.
    func testErrorsAreOneLineWithTheDocumentedStatus() {
        func line(_ arguments: [String]) -> (message: String, status: Int32)? {
            switch Result(catching: { try VduseBlk.parseAsRoot(arguments) }) {
            case .success: return nil
            case .failure(let error): return VduseBlk.errorLine(for: error, arguments: arguments)
            }
        }
        for args in [create(["--queues", "0"]), create(["--queue-size", "3"]), ["create", "disk0"],
                     create(["--bogus-option"]), ["resize", "disk0", "1000"], ["frobnicate"]] {
            let l = line(args)
            XCTAssertEqual(l?.status, 64, "\(args)")
            XCTAssertEqual(l?.message.contains("\n"), false, "\(args): \(String(describing: l))")
            XCTAssertEqual(l?.message.hasPrefix("Error"), false, "\(args): \(String(describing: l))")
            XCTAssertEqual(l?.message.hasSuffix("--help')"), true, "\(args): \(String(describing: l))")
        }
        XCTAssertEqual(line(create(["--queues", "0"]))?.message,
                       "--queues must be 1-16 (see 'vduse-blk create --help')")
        // Help is printed in full, not squeezed into an error line.
        XCTAssertNil(line(["create", "--help"]))
        XCTAssertNil(line(["--help"]))
        // Failures already reported (ExitCode) print nothing more; anything else is one line, exit 1.
        XCTAssertNil(VduseBlk.errorLine(for: ExitCode.failure, arguments: []))
        struct Odd: Error, CustomStringConvertible { var description: String { "odd failure\nsecond line" } }
        let odd = VduseBlk.errorLine(for: Odd(), arguments: ["list"])
        XCTAssertEqual(odd?.status, 1)
        XCTAssertEqual(odd?.message.contains("\n"), false)
    }

    func testImageBenchReadRejectsValuesThatTrappedOrNeverEnded() {
        let base = ["image", "bench-read", "/tmp/image.zst", "/tmp/image.raw"]
        assertRejected(base + ["--queues", "0"], "--queues must be 1-64")
        assertRejected(base + ["--queues=-3"], "--queues must be 1-64")
        assertRejected(base + ["--queues", "100000"], "--queues must be 1-64")
        assertRejected(base + ["--depth", "0"], "--depth must be 1-1024")
        assertRejected(base + ["--depth=-1"], "--depth must be 1-1024")
        for seconds in ["nan", "inf", "-1", "0", "1e300"] {
            assertRejected(base + ["--seconds=\(seconds)"], "--seconds must be 0.1-3600")
        }
        XCTAssertNoThrow(try VduseBlk.parseAsRoot(base + ["--queues", "4", "--depth", "32", "--seconds", "0.5"]))
    }
}
