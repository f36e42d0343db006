import ImageOverlay
import SystemSupport
import Glibc

/// A one-line progress bar on standard error ("[=====>    ]  45%  1.2 GiB / 2.6 GiB  350 MiB/s"),
/// redrawn at most ten times a second. Only draws when stderr is a terminal.
/// Owns the drawing state; used from one thread.
public final class ProgressBar {
    private let label: String
    private let enabled: Bool
    private let started = monotonicSeconds()
    private var lastDraw = 0.0
    private var drawn = false

    /// `label` prefixes the bar ("pack", "verify").
    public init(label: String, enabled: Bool = isatty(2) != 0) {
        self.label = label
        self.enabled = enabled
    }

    /// Redraws for `done` of `total` bytes (throttled; always draws the end).
    public func update(_ done: UInt64, _ total: UInt64) {
        guard enabled else { return }
        let now = monotonicSeconds()
        guard done >= total || now - lastDraw >= 0.1 else { return }
        lastDraw = now
        let fraction = total == 0 ? 1 : Double(done) / Double(total)
        let width = 30
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "")
            + String(repeating: " ", count: max(0, width - filled - 1))
        let rate = Double(done) / max(now - started, 1e-6)
        let percent = String(Int(fraction * 100))
        let line = "\r\(label) [\(bar)] \(String(repeating: " ", count: max(0, 3 - percent.count)))\(percent)%  "
            + "\(humanBytes(done)) / \(humanBytes(total))  \(humanBytes(UInt64(rate)))/s\u{1B}[K"
        emit(line)
        drawn = true
    }

    /// Ends the line if anything was drawn.
    public func finish() {
        if drawn { emit("\n") }
        drawn = false
    }

    private func emit(_ s: String) {
        _ = s.withCString { write(2, $0, strlen($0)) }
    }
}
