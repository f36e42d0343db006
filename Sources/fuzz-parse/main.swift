// libFuzzer target: ByteSize and BackendSpec parsing. See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("parse", ParseFuzzer.run)
