// libFuzzer target: overlay files (Overlay.open, map slots, I/O, flush and reopen). See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("overlay", OverlayFuzzer.run)
