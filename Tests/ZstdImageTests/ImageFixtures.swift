// Image-specific fixtures of the zstd tests (raw images that compress like
// disks, packing, the zstd CLI, ImageError matching), built on TestSupport.
import Foundation
import Glibc
import TestSupport
import XCTest
@testable import ImageOverlay
@testable import ZstdImage

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
func packImage(_ raw: [UInt8], in dir: TempDir, name: String = "disk",
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
