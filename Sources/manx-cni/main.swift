import Foundation
import ManxCNI

// The CNI plugin: configuration on stdin, CNI_* in the environment, the
// result or error JSON on stdout.
let input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
let outcome = CNIPlugin.main(environment: ProcessInfo.processInfo.environment, stdin: input)
if !outcome.stdout.isEmpty { print(outcome.stdout) }
exit(outcome.status)
