// libFuzzer target: server-controlled bytes of the remote backend (response heads, Content-Range,
// response judging, disk-cache metadata). See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("remote", RemoteFuzzer.run)
