import Foundation
import Logging
import ManxLogging
import XCTest

final class JSONLogHandlerTests: XCTestCase {
    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var all: [String] { lock.withLock { lines } }
    }

    func testOneObjectPerLineWithMetadataAsKeys() throws {
        let lines = Lines()
        var handler = JSONLogHandler(label: "manxd", write: { lines.append($0) })
        handler.logLevel = .info
        handler[metadataKey: "node"] = "n1"
        let logger = Logger(label: "manxd") { _ in handler }
        logger.debug("not shown")
        logger.info("applied", metadata: ["duration": "0.002 seconds", "endpoints": .stringConvertible(3),
                                          "attached": .array(["mx1", "mx2"]), "message": "shadowed"])
        XCTAssertEqual(lines.all.count, 1)
        let line = try XCTUnwrap(lines.all.first)
        XCTAssertFalse(line.contains("\n"))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["message"] as? String, "applied")
        XCTAssertEqual(object["level"] as? String, "info")
        XCTAssertEqual(object["logger"] as? String, "manxd")
        XCTAssertEqual(object["node"] as? String, "n1")
        XCTAssertEqual(object["endpoints"] as? String, "3")
        XCTAssertEqual(object["attached"] as? [String], ["mx1", "mx2"])
        XCTAssertNotNil(ISO8601DateFormatter.withFractions.date(from: object["time"] as? String ?? ""), "\(object["time"] ?? "")")
    }
}

extension ISO8601DateFormatter {
    static var withFractions: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
