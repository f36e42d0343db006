import ImageOverlay
import SystemSupport
import CRemote
import Glibc

/// One pooled libcurl easy handle (its connection is kept alive by curl
/// between requests), the response head of the current request and the
/// buffer its body lands in. The body is only accepted for a 200/206
/// response and never beyond the expected length (a longer body aborts the
/// transfer). Used by one thread at a time.
final class CurlTransfer {
    let easy: UnsafeMutableRawPointer
    var buffer: UnsafeMutableRawPointer
    let capacity: Int
    var expected = 0
    var received = 0
    var overflow = false
    var head = HTTPResponseHead()
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// Set by the fetcher while the handle carries a job.
    var job: FetchJob?
    var attemptStarted = 0.0

    init(capacity: Int) throws(RemoteError) {
        _ = Self.globalInit
        guard let easy = curl_easy_init() else { throw .transport(url: "-", reason: "curl_easy_init failed") }
        self.easy = easy
        self.capacity = capacity
        buffer = .allocate(byteCount: capacity, alignment: 4096)
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = vb_curl_set_body_callback(easy, curlBodyCallback, me)
        _ = vb_curl_set_header_callback(easy, curlHeaderCallback, me)
        _ = vb_curl_set_private(easy, me)
    }

    deinit {
        curl_easy_cleanup(easy)
        if let headerList { curl_slist_free_all(headerList) }
        buffer.deallocate()
    }

    private static let globalInit: Int32 = vb_curl_global_init()

    /// The transfer whose easy handle is `easy` (set at init through CURLOPT_PRIVATE).
    static func owner(of easy: UnsafeMutableRawPointer) -> CurlTransfer? {
        guard let p = vb_curl_private(easy) else { return nil }
        return Unmanaged<CurlTransfer>.fromOpaque(p).takeUnretainedValue()
    }

    /// Prepares a GET of `url` with `headers` into the buffer, expecting `length` bytes.
    func prepare(url: String, headers: [String], length: Int, policy: FetchPolicy, remaining: Double) {
        precondition(length <= capacity)
        expected = length
        received = 0
        overflow = false
        head = HTTPResponseHead()
        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        for h in headers + ["Accept-Encoding: identity"] { headerList = curl_slist_append(headerList, h) }
        _ = vb_curl_setopt_str(easy, CURLOPT_URL, url)
        _ = vb_curl_setopt_ptr(easy, CURLOPT_HTTPHEADER, headerList)
        _ = vb_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = vb_curl_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        _ = vb_curl_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        _ = vb_curl_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0)
        _ = vb_curl_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1))
        _ = vb_curl_setopt_long(easy, CURLOPT_BUFFERSIZE, 256 << 10)
        _ = vb_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(policy.connectTimeout * 1000))
        _ = vb_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, max(1, Int(remaining * 1000)))
        _ = vb_curl_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1024)
        _ = vb_curl_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, max(1, Int(policy.stall)))
        _ = vb_curl_setopt_str(easy, CURLOPT_USERAGENT, "vduse-blk")
        if let ca = policy.caFile { _ = vb_curl_setopt_str(easy, CURLOPT_CAINFO, ca) }
    }

    /// Runs the prepared request on this thread (open-time probes only).
    func performBlocking() -> CURLcode { curl_easy_perform(easy) }

    func errorText(_ code: CURLcode) -> String { String(cString: curl_easy_strerror(code)) }

    fileprivate func acceptBody(_ data: UnsafeRawPointer, _ n: Int) -> Int {
        guard head.status == 206 || head.status == 200 else { return n }  // an error page: not data
        guard received + n <= expected else {
            overflow = true
            return 0  // aborts the transfer (CURLE_WRITE_ERROR)
        }
        memcpy(buffer + received, data, n)
        received += n
        return n
    }
}

private let curlBodyCallback: vb_curl_data_cb = { data, size, count, user in
    guard let data, let user else { return 0 }
    let t = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    return t.acceptBody(UnsafeRawPointer(data), size &* count)
}

private let curlHeaderCallback: vb_curl_data_cb = { data, size, count, user in
    guard let data, let user else { return 0 }
    let t = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    let n = size &* count
    t.head.consume(line: UnsafeRawBufferPointer(start: UnsafeRawPointer(data), count: n))
    return n
}
