// libFuzzer target: VDUSE control messages through the real DeviceController. See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("control", ControlFuzzer.run)
