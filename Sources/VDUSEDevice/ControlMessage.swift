import CVDUSE

/// A control request read from the device fd, decoded from
/// `struct vduse_dev_request` (driver-controlled bytes: checked by the handler).
public enum ControlMessage: Equatable, Sendable {
    case getVQState(requestID: UInt32, queue: UInt32)
    case setStatus(requestID: UInt32, status: UInt8)
    case updateIOTLB(requestID: UInt32, start: UInt64, last: UInt64)
    case unknown(requestID: UInt32, type: UInt32)

    public var requestID: UInt32 {
        switch self {
        case .getVQState(let id, _), .setStatus(let id, _), .updateIOTLB(let id, _, _), .unknown(let id, _):
            return id
        }
    }

    /// Decodes `bytes` (exactly one request); nil when the size is wrong.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> ControlMessage? {
        guard bytes.count == MemoryLayout<vb_vduse_dev_request>.size else { return nil }
        let r = bytes.loadUnaligned(as: vb_vduse_dev_request.self)
        switch r.type {
        case UInt32(VB_VDUSE_GET_VQ_STATE.rawValue):
            return .getVQState(requestID: r.request_id, queue: r.vq_state.index)
        case UInt32(VB_VDUSE_SET_STATUS.rawValue):
            return .setStatus(requestID: r.request_id, status: r.s.status)
        case UInt32(VB_VDUSE_UPDATE_IOTLB.rawValue):
            return .updateIOTLB(requestID: r.request_id, start: r.iova.start, last: r.iova.last)
        default:
            return .unknown(requestID: r.request_id, type: r.type)
        }
    }
}

/// The answer to one control request (`struct vduse_dev_response`).
public struct ControlResponse: Equatable, Sendable {
    public var requestID: UInt32
    public var ok: Bool
    /// For GET_VQ_STATE: the queue index and its avail index.
    public var vqState: (queue: UInt32, availIndex: UInt16)?

    public init(requestID: UInt32, ok: Bool, vqState: (queue: UInt32, availIndex: UInt16)? = nil) {
        self.requestID = requestID
        self.ok = ok
        self.vqState = vqState
    }

    public static func == (a: ControlResponse, b: ControlResponse) -> Bool {
        a.requestID == b.requestID && a.ok == b.ok && a.vqState?.queue == b.vqState?.queue
            && a.vqState?.availIndex == b.vqState?.availIndex
    }

    public func encode() -> vb_vduse_dev_response {
        var r = vb_vduse_dev_response()
        r.request_id = requestID
        r.result = ok ? UInt32(VB_VDUSE_REQ_RESULT_OK) : UInt32(VB_VDUSE_REQ_RESULT_FAILED)
        if let s = vqState {
            r.vq_state.index = s.queue
            r.vq_state.split.avail_index = s.availIndex
        }
        return r
    }
}
