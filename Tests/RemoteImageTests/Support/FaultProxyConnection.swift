import ImageOverlay
import SystemSupport
import Foundation
import Glibc

/// One client connection of a `FaultProxy`, served on its own thread: reads request heads
/// (GET/HEAD, no bodies; pipelined bytes are kept), applies the fault plan per request and
/// forwards over a fresh upstream connection per request.
///
/// Owns the client descriptor (closed when `serve()` returns) and, during each forward, that
/// request's upstream descriptor. Both are registered with the core so `stop()` can shut them down.
struct FaultProxyConnection {
    let client: Int32
    let core: FaultProxyCore

    /// How the response body is relayed.
    private enum Relay {
        case whole, half, shiftedRange, claimedTotal(String), paced(bytesPerSecond: Int)
    }

    private static let maxHeadBytes = 64 * 1024

    func serve() {
        defer { core.close(client) }
        var pending: [UInt8] = []
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while let head = readRequestHead(&pending, &scratch) {
            guard let request = head else {
                _ = sendStatus(400, method: "GET", keepAlive: false)
                return
            }
            let keepAlive = !request.wantsClose
            let reusable: Bool
            switch core.takeFault() {
            case .pass: reusable = forward(request, .whole, keepAlive: keepAlive, &scratch)
            case .status(let code): reusable = sendStatus(code, method: request.method, keepAlive: keepAlive)
            case .stall(let seconds): _ = core.sleep(seconds); reusable = false
            case .truncate: _ = forward(request, .half, keepAlive: keepAlive, &scratch); reusable = false
            case .wrongRange: reusable = forward(request, .shiftedRange, keepAlive: keepAlive, &scratch)
            case .claimTotal(let total): reusable = forward(request, .claimedTotal(total), keepAlive: keepAlive, &scratch)
            case .dropConnection: reusable = false
            case .slowBody(let rate):
                reusable = forward(request, .paced(bytesPerSecond: max(1, rate)), keepAlive: keepAlive, &scratch)
            }
            if !reusable || !keepAlive || core.isStopping { return }
        }
    }

    /// The next request head: nil at EOF/error, .some(nil) if malformed or oversized.
    private func readRequestHead(_ pending: inout [UInt8], _ scratch: inout [UInt8]) -> HTTPWireHead?? {
        while true {
            if let length = HTTPWireHead.headLength(in: pending) {
                let head = HTTPWireHead(pending[0..<length])
                pending.removeFirst(length)
                return .some(head)
            }
            if pending.count > Self.maxHeadBytes { return .some(nil) }
            let n = LoopbackSocket.receive(client, into: &scratch)
            if n <= 0 { return nil }
            pending.append(contentsOf: scratch[0..<n])
        }
    }

    /// A small locally generated reply. Returns whether the connection stays usable.
    private func sendStatus(_ code: Int, method: String?, keepAlive: Bool) -> Bool {
        let body = Array("fault proxy: injected status \(code)\n".utf8)
        let head = HTTPWireHead(startLine: "HTTP/1.1 \(code) \(Self.reason(code))", fields: [
            ("Content-Type", "text/plain"),
            ("Content-Length", String(body.count)),
            ("Connection", keepAlive ? "keep-alive" : "close"),
        ])
        let bytes = head.bytes + (method == "HEAD" ? [] : body)
        return LoopbackSocket.sendAll(client, bytes) && keepAlive
    }

    /// Forwards one request upstream and relays the reply. Returns whether the client
    /// connection can carry another request.
    private func forward(_ request: HTTPWireHead, _ relay: Relay, keepAlive: Bool, _ scratch: inout [UInt8]) -> Bool {
        guard let upstream = try? LoopbackSocket.connect(host: core.upstreamHost, port: core.upstreamPort) else {
            return sendStatus(502, method: request.method, keepAlive: keepAlive)
        }
        guard core.register(upstream) else {
            Glibc.close(upstream)
            return false
        }
        defer { core.close(upstream) }

        var upstreamRequest = request
        upstreamRequest.set("Connection", "close")
        guard LoopbackSocket.sendAll(upstream, upstreamRequest.bytes) else {
            return sendStatus(502, method: request.method, keepAlive: keepAlive)
        }

        var received: [UInt8] = []
        var headLength: Int?
        while headLength == nil {
            let n = LoopbackSocket.receive(upstream, into: &scratch)
            guard n > 0, received.count < Self.maxHeadBytes else {
                _ = sendStatus(502, method: request.method, keepAlive: false)
                return false
            }
            received.append(contentsOf: scratch[0..<n])
            headLength = HTTPWireHead.headLength(in: received)
        }
        guard let length = headLength, var response = HTTPWireHead(received[0..<length]),
              let status = response.statusCode else {
            _ = sendStatus(502, method: request.method, keepAlive: false)
            return false
        }

        let bodyless = request.method == "HEAD" || status / 100 == 1 || status == 204 || status == 304
        let bodyLength: Int? = bodyless ? 0 : response.contentLength
        let closeAfter = !keepAlive || bodyLength == nil
        response.set("Connection", closeAfter ? "close" : "keep-alive")
        if case .shiftedRange = relay, let range = response["Content-Range"] {
            response.set("Content-Range", Self.shifted(range, by: 512))
        }
        if case .claimedTotal(let total) = relay, let range = response["Content-Range"], let slash = range.firstIndex(of: "/") {
            response.set("Content-Range", range[..<slash] + "/" + total)
        }
        let headBytes = response.bytes
        guard LoopbackSocket.sendAll(client, headBytes) else { return false }
        core.countForwarded(headBytes.count)

        // Body: what followed the head, then the rest of the upstream stream.
        var limit = bodyLength ?? Int.max
        if case .half = relay { limit = (bodyLength ?? 0) / 2 }
        var sent = 0
        var chunk = Array(received[length...])
        while sent < limit {
            if chunk.isEmpty {
                let n = LoopbackSocket.receive(upstream, into: &scratch)
                if n <= 0 { break }
                chunk = Array(scratch[0..<n])
            }
            let take = min(chunk.count, limit - sent)
            guard emit(chunk[0..<take], relay) else { return false }
            sent += take
            chunk.removeAll(keepingCapacity: true)
        }
        if case .half = relay { return false }
        return !closeAfter && sent == limit
    }

    /// Writes body bytes to the client, pacing them for `.paced`.
    private func emit(_ bytes: ArraySlice<UInt8>, _ relay: Relay) -> Bool {
        guard case .paced(let rate) = relay else {
            guard bytes.withUnsafeBytes({ LoopbackSocket.sendAll(client, $0) }) else { return false }
            core.countForwarded(bytes.count)
            return true
        }
        let slice = max(1, rate / 20)
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let end = min(offset + slice, bytes.endIndex)
            guard bytes[offset..<end].withUnsafeBytes({ LoopbackSocket.sendAll(client, $0) }) else { return false }
            core.countForwarded(end - offset)
            guard core.sleep(Double(end - offset) / Double(rate)) else { return false }
            offset = end
        }
        return true
    }

    /// "bytes a-b/total" shifted to "bytes (a+delta)-(b+delta)/total"; other forms unchanged.
    static func shifted(_ contentRange: String, by delta: Int) -> String {
        let scanner = contentRange.trimmingCharacters(in: .whitespaces)
        guard scanner.hasPrefix("bytes "),
              let dash = scanner.firstIndex(of: "-"), let slash = scanner.firstIndex(of: "/"),
              let first = Int(scanner[scanner.index(scanner.startIndex, offsetBy: 6)..<dash]),
              let last = Int(scanner[scanner.index(after: dash)..<slash]) else { return contentRange }
        return "bytes \(first + delta)-\(last + delta)\(scanner[slash...])"
    }

    private static func reason(_ code: Int) -> String {
        switch code {
        case 200: "OK"
        case 206: "Partial Content"
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 416: "Range Not Satisfiable"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "Injected"
        }
    }
}
