// Digest.swift - SHA-256, HMAC-SHA256 and lowercase hex, over the OpenSSL
// wrappers in CRemote. Internal helpers for the SigV4 signer.
import ImageOverlay
import SystemSupport
import CRemote

private let lowerHexDigits: [UInt8] = Array("0123456789abcdef".utf8)

/// Lowercase hex of `bytes`, two digits a byte.
func hexEncode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(lowerHexDigits[Int(byte >> 4)])
        out.append(lowerHexDigits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Runs `body` with a non-null pointer to `buffer`'s bytes (OpenSSL wants one even for no bytes).
private func withNonNullBase<R>(_ buffer: UnsafeRawBufferPointer, _ body: (UnsafeRawPointer, Int) -> R) -> R {
    if let base = buffer.baseAddress { return body(base, buffer.count) }
    var zero: UInt8 = 0
    return withUnsafeBytes(of: &zero) { body($0.baseAddress!, 0) }
}

/// SHA-256 of `buffer`: 32 bytes.
func sha256(_ buffer: UnsafeRawBufferPointer) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: 32) { out, count in
        withNonNullBase(buffer) { vb_sha256($0, $1, out.baseAddress!) }
        count = 32
    }
}

/// Lowercase hex SHA-256 of `buffer`.
func sha256Hex(_ buffer: UnsafeRawBufferPointer) -> String {
    hexEncode(sha256(buffer))
}

/// Lowercase hex SHA-256 of `bytes`.
func sha256Hex(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { sha256Hex($0) }
}

/// Lowercase hex SHA-256 of the UTF-8 bytes of `text`.
func sha256Hex(_ text: String) -> String {
    sha256Hex(Array(text.utf8))
}

/// HMAC-SHA256 of `data` under `key`: 32 bytes.
func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: 32) { out, count in
        let status = key.withUnsafeBytes { keyBuffer in
            data.withUnsafeBytes { dataBuffer in
                withNonNullBase(keyBuffer) { keyBase, keyCount in
                    withNonNullBase(dataBuffer) { dataBase, dataCount in
                        vb_hmac_sha256(keyBase, keyCount, dataBase, dataCount, out.baseAddress!)
                    }
                }
            }
        }
        // HMAC-SHA256 over memory we own fails only if OpenSSL cannot allocate.
        precondition(status == 0, "HMAC-SHA256 failed in libcrypto")
        count = 32
    }
}

/// HMAC-SHA256 of the UTF-8 bytes of `text` under `key`.
func hmacSHA256(key: [UInt8], text: String) -> [UInt8] {
    hmacSHA256(key: key, data: Array(text.utf8))
}
