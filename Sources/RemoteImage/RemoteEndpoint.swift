import ImageOverlay
import SystemSupport
import Glibc

/// Where a remote image lives and how to ask for it: the URL curl fetches and,
/// for `s3://` objects with credentials, the SigV4 signer and the exact host
/// and path that get signed. Built once at open from the (untrusted) URL,
/// the backend options and the usual AWS environment variables.
public struct RemoteEndpoint: Sendable {
    /// The URL every range request goes to.
    public let url: String
    /// What messages and the disk cache key call the object (no credentials).
    public let displayName: String
    let signer: SigV4Signer?
    /// Host header value and raw (unencoded) path, as signed.
    let signedHost: String
    let signedPath: String

    static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// Resolves `options.url` (http, https or s3) with `environment` (AWS_* variables).
    public static func resolve(_ options: RemoteOptions,
                               environment: [String: String] = RemoteEndpoint.processEnvironment())
        throws(RemoteError) -> RemoteEndpoint {
        let url = options.url
        guard url.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }) else { throw .invalidURL("the URL contains control characters") }
        // S3 keys may hold any character (they are percent-encoded here); http(s) URLs come encoded.
        if url.hasPrefix("s3://") { return try resolveS3(options, environment: environment) }
        guard url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .invalidURL("'\(url)' contains spaces or non-ASCII characters (percent-encode them)")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw .invalidURL("'\(url)': expected http://, https:// or s3://")
        }
        let parts = try URLParts(url)
        return RemoteEndpoint(url: url, displayName: "\(parts.scheme)://\(parts.authority)\(parts.path)", signer: nil,
                              signedHost: parts.authority, signedPath: parts.path)
    }

    static func resolveS3(_ options: RemoteOptions, environment env: [String: String]) throws(RemoteError) -> RemoteEndpoint {
        let rest = options.url.dropFirst("s3://".count)
        guard let slash = rest.firstIndex(of: "/") else { throw .invalidURL("'\(options.url)': expected s3://BUCKET/KEY") }
        let bucket = String(rest[..<slash])
        let key = String(rest[rest.index(after: slash)...])
        guard (3...63).contains(bucket.utf8.count),
              bucket.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x2D }) else {
            throw .invalidURL("'\(bucket)' is not a valid S3 bucket name")
        }
        guard !key.isEmpty, key.utf8.count <= 1024 else { throw .invalidURL("'\(options.url)': the object key is empty or too long") }
        let region = options.s3Region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ?? "us-east-1"
        guard !region.isEmpty, region.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
            throw .invalidURL("'\(region)' is not a valid AWS region")
        }
        let custom = options.s3Endpoint ?? env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"]
        let endpoint = try URLParts(custom ?? "https://s3.\(region).amazonaws.com")
        let forced = env["AWS_S3_FORCE_PATH_STYLE"].map { $0 == "1" || $0.lowercased() == "true" }
        // Custom endpoints (MinIO, Ceph, a proxy) are usually path-style; dotted buckets break TLS names.
        let pathStyle = options.s3PathStyle ?? forced ?? (custom != nil || bucket.contains("."))
        let host = pathStyle ? endpoint.authority : "\(bucket).\(endpoint.authority)"
        let base = endpoint.path == "/" ? "" : endpoint.path
        let path = pathStyle ? "\(base)/\(bucket)/\(key)" : "\(base)/\(key)"
        var signer: SigV4Signer?
        if let id = env["AWS_ACCESS_KEY_ID"], let secret = env["AWS_SECRET_ACCESS_KEY"], !id.isEmpty, !secret.isEmpty {
            let token = env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            signer = SigV4Signer(credentials: AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token),
                                 region: region, service: "s3")
        }
        let encodedPath = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { SigV4Signer.encodeURIComponent(String($0)) }.joined(separator: "/")
        return RemoteEndpoint(url: "\(endpoint.scheme)://\(host)\(encodedPath)", displayName: "s3://\(bucket)/\(key)",
                              signer: signer, signedHost: host, signedPath: path)
    }

    /// Extra request headers for one attempt: the range, an If-Match pinning the
    /// object version, and the S3 signature (fresh per attempt: it is dated).
    func headers(range: (first: UInt64, last: UInt64), ifMatch: String?, now: time_t = time(nil)) -> [String] {
        var plain: [(String, String)] = [("range", "bytes=\(range.first)-\(range.last)")]
        if let ifMatch { plain.append(("if-match", ifMatch)) }
        var lines = plain.map { "\($0.0): \($0.1)" }
        if let signer {
            let signed = signer.sign(method: "GET", host: signedHost, path: signedPath, query: [], headers: plain,
                                     payloadHash: Self.emptyPayloadHash, timestamp: now)
            lines += signed.map { "\($0.0): \($0.1)" }
        }
        return lines
    }

    public static func processEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }
}

/// The scheme, authority (host[:port]) and path of an http(s) URL; rejects
/// user-info, fragments and anything that is not a plain http(s) URL.
struct URLParts {
    var scheme: String
    var authority: String
    var path: String

    init(_ url: String) throws(RemoteError) {
        let lower = url.lowercased()
        let prefix = lower.hasPrefix("http://") ? "http://" : lower.hasPrefix("https://") ? "https://" : nil
        guard let prefix else { throw .invalidURL("'\(url)': only http and https are supported") }
        scheme = String(prefix.dropLast(3))
        let rest = url.dropFirst(prefix.count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        authority = String(rest[..<slash])
        var p = String(rest[slash...])
        if let q = p.firstIndex(of: "?") { p = String(p[..<q]) }
        path = p.isEmpty ? "/" : p
        guard !authority.isEmpty, !authority.contains("@"), !url.contains("#") else {
            throw .invalidURL("'\(url)': needs a host, without user-info or fragment")
        }
    }
}
