import ManxDatastore
import ManxModel
import XCTest

final class DatastoreTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "manx-ds-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testLoadsMultiDocumentFilesAndIgnoresOthers() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
        try "not yaml: [".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        try "kind: Junk".write(toFile: dir + "/.hidden.yaml", atomically: true, encoding: .utf8)
        let (set, digest) = try ds.load()
        XCTAssertEqual(Set(set.namespaces.keys), ["one", "two"])
        XCTAssertEqual(digest, try ds.snapshot().digest)
    }

    func testAnyBadFileRejectsTheBatch() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
        try ds.write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n")
        XCTAssertThrowsError(try ds.load()) { error in
            XCTAssertEqual((error as? ValidationErrors)?.errors.first?.file, "b.yaml")
        }
    }

    func testDigestChangesWithContent() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
        let before = try ds.snapshot().digest
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
        XCTAssertNotEqual(before, try ds.snapshot().digest)
    }

    func testReaderDecodesOnlyChangedFiles() throws {
        let ds = DirectoryDatastore(directory: dir)
        for name in ["a", "b", "c"] {
            try ds.write("\(name).yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(name)}\n")
        }
        let reader = DirectoryReader(ds)
        var read = try reader.read()
        XCTAssertEqual(read.decodedFiles, 3)
        XCTAssertEqual(read.digest, try ds.snapshot().digest)
        XCTAssertEqual(try reader.read().decodedFiles, 0, "nothing changed: nothing decoded")

        try ds.write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: bee}\n")
        read = try reader.read()
        XCTAssertEqual(read.decodedFiles, 1)
        XCTAssertEqual(read.digest, try ds.snapshot().digest)
        XCTAssertEqual(Set(try ResourceSet.assemble(read.files).namespaces.keys), ["a", "bee", "c"])

        try ds.remove("a.yaml")
        read = try reader.read()
        XCTAssertEqual(read.decodedFiles, 0)
        XCTAssertEqual(read.digest, try ds.snapshot().digest)
        XCTAssertEqual(Set(try ResourceSet.assemble(read.files).namespaces.keys), ["bee", "c"])

        // A duplicate across files is found when the files are put together.
        try ds.write("d.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n")
        XCTAssertThrowsError(try ResourceSet.assemble(try reader.read().files)) { error in
            XCTAssertTrue("\(error)".contains("duplicate: already defined in c.yaml"), "\(error)")
        }
    }
}
