import Glibc
import SystemSupport
import TestSupport
import XCTest

/// The one child-process runner (the `vdpa` tool): status and output come
/// back, the child starts with default signal handling and an empty mask
/// whatever the daemon blocked, and inherits no descriptor but 0-2.
final class SubprocessTests: XCTestCase {
    func testStatusAndBothStreamsComeBack() throws {
        let r = try Subprocess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        XCTAssertEqual(r.status, 3)
        XCTAssertEqual(r.output, "out\nerr\n")
    }

    func testAMissingProgramIsAnErrorNotATrap() {
        XCTAssertThrowsError(try Subprocess.run("/nonexistent/vdpa", ["dev"]))
    }

    func testTheChildTakesSignalsTheParentBlocked() throws {
        var term = sigset_t(), old = sigset_t()
        sigemptyset(&term)
        sigaddset(&term, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &term, &old)
        defer { pthread_sigmask(SIG_SETMASK, &old, nil) }
        let r = try Subprocess.run("/bin/sh", ["-c", "kill -TERM $$; sleep 2; exit 0"])
        XCTAssertEqual(r.status, 128 + SIGTERM)
    }

    func testNoDescriptorBesidesTheStandardOnesIsInherited() throws {
        let fd = open("/dev/null", O_RDONLY)   // no O_CLOEXEC on purpose
        XCTAssertGreaterThan(fd, 2)
        defer { close(fd) }
        let r = try Subprocess.run("/bin/sh", ["-c", "[ -e /proc/self/fd/\(fd) ] && echo leaked || echo closed"])
        XCTAssertEqual(r.output, "closed\n")
    }

    func testOutputIsCutAtTheLimit() throws {
        let r = try Subprocess.run("/bin/sh", ["-c", "yes | head -c 100000"], outputLimit: 1000)
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.output.utf8.count, 1000)
    }

    func testPathQueriesAnswerWithoutThrowing() {
        XCTAssertTrue(PathQuery.exists("/proc/self"))
        XCTAssertFalse(PathQuery.exists("/nonexistent/x"))
        XCTAssertTrue(PathQuery.isExecutable("/bin/sh"))
        XCTAssertFalse(PathQuery.isExecutable("/etc/passwd"))
        XCTAssertFalse(PathQuery.isExecutable("/proc"))
        XCTAssertEqual(PathQuery.linkTargetName("/proc/self/exe").map { !$0.isEmpty }, true)
        XCTAssertNil(PathQuery.linkTargetName("/etc/passwd"))
        XCTAssertEqual(PathQuery.entries("/proc/self/fdinfo")?.contains("0"), true)
        XCTAssertNil(PathQuery.entries("/nonexistent"))
    }
}
