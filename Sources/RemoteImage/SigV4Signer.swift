// SigV4Signer.swift - AWS Signature Version 4, Authorization-header form.
// Pure functions of their arguments (the time included): no clock, no I/O.
#if canImport(Glibc)
import ImageOverlay
import SystemSupport
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An AWS key pair and, for temporary (STS) credentials, its session token.
/// Owns nothing but these three strings; where they come from is the caller's business.
public struct AWSCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// Signs HTTP requests with AWS Signature Version 4 for one region and service.
/// Owns the credentials and the scope (region, service). It holds no state between
/// requests and reads no clock: the same arguments always give the same headers.
///
/// Paths: the signer URI-encodes `path` exactly once (RFC 3986 unreserved bytes kept,
/// '/' kept, every other UTF-8 byte %XX uppercase). For S3 (`normalizePath` false)
/// `path` is the raw, unencoded object path and the request must go out with
/// `SigV4Signer.encodePath(path)` as its URL path, which is then exactly the canonical
/// URI. For other services (`normalizePath` true) `path` is the path as it appears on
/// the request line, already encoded by the caller; the signer removes dot segments and
/// empty segments and encodes it again (AWS's "double encoding" for non-S3 services).
public struct SigV4Signer: Sendable {
    public static let algorithm = "AWS4-HMAC-SHA256"
    /// Hex SHA-256 of no bytes: the payload hash of a GET.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// S3's payload hash for a body it should not check.
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The headers to add to the request: `x-amz-date`, `x-amz-content-sha256` (S3 only),
    /// `x-amz-security-token` (with a session token) and `Authorization`. `headers` are the
    /// other headers to sign (not `host`: that is `host`, and always signed); `query` holds
    /// unencoded name/value pairs (send them as `canonicalQueryString(query)`).
    public func sign(method: String, host: String, path: String, query: [(String, String)],
                     headers: [(String, String)], payloadHash: String, timestamp: time_t,
                     normalizePath: Bool = false) -> [(String, String)] {
        let stamp = Self.amzTimestamp(timestamp)
        let canonical = canonicalParts(method: method, host: host, path: path, query: query, headers: headers,
                                       payloadHash: payloadHash, amzDate: stamp.dateTime, normalizePath: normalizePath)
        let toSign = stringToSign(canonicalRequest: canonical.request, timestamp: timestamp)
        let signature = hexEncode(hmacSHA256(key: signingKey(dateStamp: stamp.date), text: toSign))
        var added = signerHeaders(payloadHash: payloadHash, amzDate: stamp.dateTime)
        added.append(("Authorization", "\(Self.algorithm) Credential=\(credentials.accessKeyID)/"
            + "\(credentialScope(dateStamp: stamp.date)), SignedHeaders=\(canonical.signedHeaders), "
            + "Signature=\(signature)"))
        return added
    }

    /// The canonical request `sign` signs for the same arguments.
    public func canonicalRequest(method: String, host: String, path: String, query: [(String, String)],
                                 headers: [(String, String)], payloadHash: String, timestamp: time_t,
                                 normalizePath: Bool = false) -> String {
        canonicalParts(method: method, host: host, path: path, query: query, headers: headers, payloadHash: payloadHash,
                       amzDate: Self.amzTimestamp(timestamp).dateTime, normalizePath: normalizePath).request
    }

    /// Algorithm, timestamp, scope and the hex SHA-256 of `canonicalRequest`, one a line.
    public func stringToSign(canonicalRequest: String, timestamp: time_t) -> String {
        let stamp = Self.amzTimestamp(timestamp)
        return "\(Self.algorithm)\n\(stamp.dateTime)\n\(credentialScope(dateStamp: stamp.date))\n"
            + sha256Hex(canonicalRequest)
    }

    /// `yyyymmdd/region/service/aws4_request`.
    public func credentialScope(dateStamp: String) -> String {
        "\(dateStamp)/\(region)/\(service)/aws4_request"
    }

    /// HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request".
    public func signingKey(dateStamp: String) -> [UInt8] {
        var key = Array("AWS4\(credentials.secretAccessKey)".utf8)
        for part in [dateStamp, region, service, "aws4_request"] { key = hmacSHA256(key: key, text: part) }
        return key
    }

    /// `yyyymmddThhmmssZ` and `yyyymmdd` in UTC.
    public static func amzTimestamp(_ timestamp: time_t) -> (dateTime: String, date: String) {
        var seconds = timestamp
        var parts = tm()
        precondition(gmtime_r(&seconds, &parts) != nil, "timestamp out of range")
        func digits(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let date = digits(parts.tm_year + 1900, 4) + digits(parts.tm_mon + 1, 2) + digits(parts.tm_mday, 2)
        return (date + "T" + digits(parts.tm_hour, 2) + digits(parts.tm_min, 2) + digits(parts.tm_sec, 2) + "Z", date)
    }

    // MARK: URI encoding

    /// RFC 3986 encoding as SigV4 wants it: A-Z a-z 0-9 - . _ ~ kept (and '/' when
    /// `keepingSlashes`), every other UTF-8 byte as %XX with uppercase hex.
    public static func encodeURIComponent(_ text: String, keepingSlashes: Bool = false) -> String {
        let upper: [UInt8] = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) || (keepingSlashes && byte == UInt8(ascii: "/")) {
                out.append(byte)
            } else {
                out += [UInt8(ascii: "%"), upper[Int(byte >> 4)], upper[Int(byte & 0x0f)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The URL path to send for the raw path `path` ('/' kept, a leading '/' added if missing).
    /// For S3 this is the canonical URI the signer signs.
    public static func encodePath(_ path: String) -> String {
        let encoded = encodeURIComponent(path, keepingSlashes: true)
        return encoded.hasPrefix("/") ? encoded : "/" + encoded
    }

    /// `name=value` pairs, both encoded, sorted by name then value, joined by '&'.
    /// Also the query string to send, so the URL matches what was signed.
    public static func canonicalQueryString(_ query: [(String, String)]) -> String {
        query.map { (encodeURIComponent($0.0), encodeURIComponent($0.1)) }
            .sorted { $0.0 != $1.0 ? utf8Less($0.0, $1.0) : utf8Less($0.1, $1.1) }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    // MARK: Canonical request

    private func canonicalParts(method: String, host: String, path: String, query: [(String, String)],
                                headers: [(String, String)], payloadHash: String, amzDate: String,
                                normalizePath: Bool) -> (request: String, signedHeaders: String) {
        let own = signerHeaders(payloadHash: payloadHash, amzDate: amzDate)
        let ownNames = Set(own.map(\.0) + ["host"])
        var all: [(name: String, value: String)] = [("host", Self.canonicalValue(host))]
        for (name, value) in headers where !ownNames.contains(name.lowercased()) {
            all.append((name.lowercased(), Self.canonicalValue(value)))
        }
        all += own.map { (name: $0.0, value: $0.1) }
        // Stable by name: repeated headers keep their order and join with ','.
        let sorted = all.enumerated().sorted {
            $0.element.name != $1.element.name ? Self.utf8Less($0.element.name, $1.element.name) : $0.offset < $1.offset
        }.map(\.element)
        var merged: [(name: String, value: String)] = []
        for header in sorted {
            if let last = merged.last, last.name == header.name {
                merged[merged.count - 1].value += "," + header.value
            } else {
                merged.append(header)
            }
        }
        let signedHeaders = merged.map(\.name).joined(separator: ";")
        let uri = Self.encodePath(normalizePath ? Self.removeDotSegments(path) : path)
        let lines = [method, uri, Self.canonicalQueryString(query)] + merged.map { "\($0.name):\($0.value)" }
            + ["", signedHeaders, payloadHash]
        return (lines.joined(separator: "\n"), signedHeaders)
    }

    /// The headers the signer itself adds, all signed.
    private func signerHeaders(payloadHash: String, amzDate: String) -> [(String, String)] {
        var out = [("x-amz-date", amzDate)]
        if service == "s3" { out.append(("x-amz-content-sha256", payloadHash)) }
        if let token = credentials.sessionToken { out.append(("x-amz-security-token", token)) }
        return out
    }

    /// Trimmed, with every run of whitespace (folded lines included) as one space.
    private static func canonicalValue(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" || $0 == "\r\n" })
            .joined(separator: " ")
    }

    /// RFC 3986 dot-segment removal plus collapsing of empty segments ("//").
    private static func removeDotSegments(_ path: String) -> String {
        var kept: [Substring] = []
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for segment in segments {
            switch segment {
            case "", ".": continue
            case "..": if !kept.isEmpty { kept.removeLast() }
            default: kept.append(segment)
            }
        }
        if kept.isEmpty { return "/" }
        let last = segments.last ?? ""
        let trailingSlash = last.isEmpty || last == "." || last == ".."
        return "/" + kept.joined(separator: "/") + (trailingSlash ? "/" : "")
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Byte-wise order, as AWS sorts.
    private static func utf8Less(_ lhs: String, _ rhs: String) -> Bool {
        lhs.utf8.lexicographicallyPrecedes(rhs.utf8)
    }
}
