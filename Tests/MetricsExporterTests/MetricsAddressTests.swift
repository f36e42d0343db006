@testable import MetricsExporter
import XCTest

final class MetricsAddressTests: XCTestCase {
    func testAcceptsNumericAddresses() {
        XCTAssertEqual(MetricsAddress("127.0.0.1:9101")?.description, "127.0.0.1:9101")
        XCTAssertEqual(MetricsAddress("[::1]:9101")?.family, .ipv6)
        XCTAssertEqual(MetricsAddress("[::1]:9101")?.description, "[::1]:9101")
        XCTAssertEqual(MetricsAddress("0.0.0.0:0")?.port, 0)
    }

    func testRefusesEverythingElse() {
        for bad in ["", ":", "127.0.0.1", "127.0.0.1:", "localhost:9101", "::1:9101", "[::1]", "[::1]:", "[]:80",
                    "[127.0.0.1]:80", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80", "127.0.0.1:99999999999999999999",
                    "1.2.3:80", "256.0.0.1:80", " 127.0.0.1:80", "127.0.0.1:80 ", "[::1]x:80", String(repeating: "1", count: 200)] {
            XCTAssertNil(MetricsAddress(bad), bad)
        }
    }
}
