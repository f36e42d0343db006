// libFuzzer target: simulated driver + QueueWorker killed at random crash points, rebuilt from the in-flight log. See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("crash", CrashFuzzer.run)
