// libFuzzer target: VDUSE control messages through the real DeviceController and virtio-blk model. See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("control", ControlFuzzer.run)
