import SystemSupport
import CVDUSE
import VirtioCore

/// Sends used-buffer notifications with VDUSE_VQ_INJECT_IRQ on the device fd.
public final class VDUSEInterruptSink: InterruptSink {
    let deviceFD: Int32
    public init(deviceFD: Int32) { self.deviceFD = deviceFD }

    public func interrupt(queue: Int) -> Bool {
        sysCallResult(returnsNegatedErrno: true) { vb_vduse_vq_inject_irq(deviceFD, UInt32(queue)) } >= 0
    }
}
