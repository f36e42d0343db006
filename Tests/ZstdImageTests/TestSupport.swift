import SystemSupport
import Foundation
import Glibc
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

/// A fresh directory under the temp dir, removed with everything in it on deinit.
final class ScratchDir {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/vb-zstd-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw NSError(domain: NSPOSIXErrorDomain, code: Int(errno)) }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random bytes (xorshift), reproducible per seed.
struct TestRandom {
    var state: UInt64

    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count { out[i] = UInt8(truncatingIfNeeded: next() >> 24) }
        return out
    }
}

/// A raw image that compresses like a real disk: text-like runs, random
/// (incompressible) stretches and all-zero chunks, `size` bytes.
func makeRawImage(size: Int, seed: UInt64, chunk: Int = 4096) -> [UInt8] {
    var rng = TestRandom(seed: seed)
    var data = [UInt8](repeating: 0, count: size)
    let words = ["block ", "device ", "virtio ", "queue ", "zstd ", "sector ", "flush ", "overlay\n"]
    var offset = 0
    while offset < size {
        let length = min(chunk, size - offset)
        switch rng.below(4) {
        case 0: break  // zeroes
        case 1:
            for i in 0..<length { data[offset + i] = UInt8(truncatingIfNeeded: rng.next()) }
        default:
            var i = 0
            while i < length {
                for b in words[rng.below(words.count)].utf8 where i < length {
                    data[offset + i] = b
                    i += 1
                }
            }
        }
        offset += length
    }
    return data
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Runs a command, returning its exit status and stderr.
@discardableResult
func runTool(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

/// Whether the `zstd` CLI can be run.
func haveZstdCLI() -> Bool {
    (try? runTool(["zstd", "--version"]).status) == 0
}

/// Packs `raw` bytes into an image in `dir`; returns the image path.
@discardableResult
func packImage(_ raw: [UInt8], in dir: ScratchDir, name: String = "disk",
               options: PackOptions = PackOptions(chunkSize: 4096, level: 3, threads: 2)) throws -> String {
    let rawPath = dir.file(name + ".raw")
    let imagePath = dir.file(name + ".zst")
    try writeFile(rawPath, raw)
    _ = try ImagePacker.pack(raw: rawPath, output: imagePath, options: options)
    return imagePath
}

/// Asserts that `body` throws a `ImageError` matching `predicate`.
func assertImageError<T>(_ body: @autoclosure () throws -> T, _ predicate: (ImageError) -> Bool,
                         _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error \(message)", file: file, line: line)
    } catch let error as ImageError {
        XCTAssertTrue(predicate(error), "unexpected error: \(error) \(message)", file: file, line: line)
    } catch {
        XCTFail("unexpected error type: \(error)", file: file, line: line)
    }
}

/// Whether `a[range]` equals `b[range]` (memcmp: fast in debug builds).
func sameBytes(_ a: [UInt8], _ b: [UInt8], _ range: Range<Int>) -> Bool {
    sameBytes(a, range.lowerBound, b, range.lowerBound, range.count)
}

/// Whether `count` bytes of `a` from `i` equal those of `b` from `j`.
func sameBytes(_ a: [UInt8], _ i: Int, _ b: [UInt8], _ j: Int, _ count: Int) -> Bool {
    guard i + count <= a.count, j + count <= b.count else { return false }
    return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress! + i, y.baseAddress! + j, count) == 0 } }
}
