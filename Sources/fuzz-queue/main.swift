// libFuzzer target: split ring + virtio-blk requests through the real QueueWorker. See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("queue", QueueFuzzer.run)
