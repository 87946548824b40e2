@testable import ManxModel
import XCTest

/// A large file is decoded in pieces, one per CPU; what it decodes to, and
/// every error it reports, must be what decoding it whole gives.
final class PiecewiseDecodeTests: XCTestCase {
    func file(policies n: Int, broken: [Int: String] = [:]) -> String {
        var y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: load}\n"
        for j in 0..<n {
            let nets = broken[j] ?? "10.\(j / 256 % 256).\(j % 256).0/24"
            y += "---\n# policy \(j)\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: pol\(j), namespace: load}\n"
            y += "spec:\n  order: \(j % 100)\n  selector: app == 'a\(j % 20)'\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
            y += "    source: {nets: [\(nets)]}\n    destination: {ports: [\(1000 + j)]}\n"
        }
        return y
    }

    func testALargeFileDecodesInPiecesAsItDoesWhole() throws {
        let text = file(policies: 1200)
        XCTAssertGreaterThan(text.utf8.count, ResourceSet.piecewiseBytes)
        guard ProcessInfo.processInfo.activeProcessorCount > 1 else { throw XCTSkip("one CPU: files are decoded whole") }
        XCTAssertNotNil(ResourceSet.decodeInPieces(name: "all.yaml", text: text))
        let pieces = ResourceSet.decodeFile(name: "all.yaml", text: text)
        let whole = ResourceSet.decodeWhole(name: "all.yaml", text: text, kinds: nil, mentioning: nil)
        XCTAssertEqual(pieces.count, 1201)
        XCTAssertEqual(pieces.headers, whole.headers)
        XCTAssertEqual(try ResourceSet.assemble([pieces]), try ResourceSet.assemble([whole]))
    }

    func testErrorsOfALargeFileReadAsTheWholeFilesDo() {
        // A bad net late in the file, and a syntax error in another document.
        let text = file(policies: 1200, broken: [1000: "10.0.0.300/8", 500: "[unclosed"])
        XCTAssertNil(ResourceSet.decodeInPieces(name: "all.yaml", text: text))
        let decoded = ResourceSet.decodeFile(name: "all.yaml", text: text)
        let whole = ResourceSet.decodeWhole(name: "all.yaml", text: text, kinds: nil, mentioning: nil)
        XCTAssertEqual(decoded.errors, whole.errors)
        XCTAssertEqual(decoded.errors.count, 1)
        XCTAssertTrue(decoded.errors[0].reason.hasPrefix("invalid YAML"), decoded.errors[0].reason)
        XCTAssertEqual(decoded.count, 0)
        // Only the bad net: it names its document's resource and field.
        let one = ResourceSet.decodeFile(name: "all.yaml", text: file(policies: 1200, broken: [1000: "10.0.0.300/8"]))
        XCTAssertEqual(one.errors.map { "\($0.resource) \($0.field)" }, ["NetworkPolicy load/pol1000 spec.ingress[0].source.nets[0]"])
    }

    func testAFileWithADirectiveIsDecodedWhole() {
        let text = "%YAML 1.1\n---\n" + file(policies: 1200)
        XCTAssertNil(ResourceSet.decodeInPieces(name: "all.yaml", text: text))
        XCTAssertEqual(ResourceSet.decodeFile(name: "all.yaml", text: text).count, 1201)
    }
}
