import SystemSupport

/// `record-trace=`: the order in which guest reads first touch the image,
/// in units (object chunks of a raw image, image chunks of a zstd one; the
/// backend maps them to object chunks when the trace is written). Owns the
/// shared first-touch order behind one mutex; queues reach it through their
/// own `TraceFilter`, so each queue takes the lock at most once per unit,
/// never per request.
final class TraceRecorder: @unchecked Sendable {
    let path: String
    let unitCount: Int
    private struct State {
        var seen: [Bool]
        var order: [Int32] = []
    }
    private let state: Guarded<State>

    init(path: String, unitCount: Int) {
        self.path = path
        self.unitCount = unitCount
        state = Guarded(State(seen: [Bool](repeating: false, count: unitCount)))
    }

    /// Appends `unit` unless some queue touched it before.
    func note(_ unit: Int) {
        guard unit >= 0 && unit < unitCount else { return }
        state.withLock { s in
            if !s.seen[unit] {
                s.seen[unit] = true
                s.order.append(Int32(unit))
            }
        }
    }

    /// The units touched so far, in first-touch order.
    func order() -> [Int] { state.withLock { $0.order.map(Int.init) } }

    /// A filter for one queue.
    func filter() -> TraceFilter { TraceFilter(recorder: self) }
}

/// One queue's view of the recorder: a bitmap of the units it already
/// reported, so repeated reads of a unit cost one bit test. Owned by the queue.
struct TraceFilter {
    private var reported: [UInt64]
    private let recorder: TraceRecorder

    init(recorder: TraceRecorder) {
        self.recorder = recorder
        reported = [UInt64](repeating: 0, count: (recorder.unitCount + 63) / 64)
    }

    @inline(__always)
    mutating func note(_ unit: Int) {
        guard unit >= 0 && unit < recorder.unitCount else { return }
        let bit: UInt64 = 1 << UInt64(unit & 63)
        if reported[unit >> 6] & bit != 0 { return }
        reported[unit >> 6] |= bit
        recorder.note(unit)
    }
}
