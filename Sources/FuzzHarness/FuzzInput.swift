import SystemSupport

/// Reads a fuzzer's input as a stream of little-endian integers. Past the end
/// every read returns zero, so any byte string is a valid program: libFuzzer
/// mutates the bytes, the harness decides what they mean.
public struct FuzzInput {
    let bytes: [UInt8]
    var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(_ buffer: UnsafeRawBufferPointer) { bytes = Array(buffer) }

    public var isAtEnd: Bool { position >= bytes.count }
    public var remaining: Int { max(0, bytes.count - position) }

    public mutating func u8() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    public mutating func bool() -> Bool { u8() & 1 != 0 }

    /// A value in 0..<bound (0 when bound is 0).
    public mutating func below(_ bound: Int) -> Int { bound <= 0 ? 0 : Int(u8()) % bound }

    /// `count` bytes (zero-padded past the end).
    public mutating func take(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(0, count))
        for i in 0..<out.count { out[i] = u8() }
        return out
    }

    /// The rest of the input.
    public mutating func rest() -> [UInt8] {
        guard position < bytes.count else { return [] }
        defer { position = bytes.count }
        return Array(bytes[position...])
    }
}

/// An invariant the harness checks: a violation is a finding, so it traps
/// (libFuzzer records the input as a crash).
@inline(never)
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                      file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("fuzz invariant violated: \(message())", file: file, line: line) }
}
