import Foundation

/// A strict reader of the Prometheus text exposition format (0.0.4) for the
/// tests: every line must be a HELP or TYPE comment or a well-formed sample,
/// or parsing fails naming the line.
struct Exposition {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    var samples: [Sample] = []
    var types: [String: String] = [:]

    struct Malformed: Error, CustomStringConvertible {
        let line: String
        let why: String
        var description: String { "\(why): \(line)" }
    }

    init(_ text: String) throws {
        guard text.hasSuffix("\n") || text.isEmpty else { throw Malformed(line: "", why: "no final newline") }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            let l = String(line)
            if l.hasPrefix("# HELP ") {
                let rest = l.dropFirst(7)
                guard let name = rest.split(separator: " ").first, Self.isName(String(name)) else {
                    throw Malformed(line: l, why: "HELP without a metric name")
                }
                continue
            }
            if l.hasPrefix("# TYPE ") {
                let parts = l.split(separator: " ")
                guard parts.count == 4, Self.isName(String(parts[2])),
                      ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                    throw Malformed(line: l, why: "bad TYPE line")
                }
                guard types[String(parts[2])] == nil else { throw Malformed(line: l, why: "second TYPE for a metric") }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            guard !l.hasPrefix("#") else { continue }
            samples.append(try Self.sample(l))
        }
    }

    static func isName(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, f == "_" || f == ":" || (f.isASCII && CharacterSet.letters.contains(f)) else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0 == ":" || CharacterSet.alphanumerics.contains($0)) }
    }

    static func sample(_ l: String) throws -> Sample {
        var chars = Array(l.unicodeScalars)
        var i = 0
        var name = ""
        while i < chars.count, chars[i] != "{", chars[i] != " " { name.unicodeScalars.append(chars[i]); i += 1 }
        guard isName(name) else { throw Malformed(line: l, why: "bad metric name") }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                guard i < chars.count else { throw Malformed(line: l, why: "unterminated labels") }
                if chars[i] == "}" { i += 1; break }
                var key = ""
                while i < chars.count, chars[i] != "=" { key.unicodeScalars.append(chars[i]); i += 1 }
                guard isName(key), !key.contains(":"), i + 1 < chars.count, chars[i + 1] == "\"" else {
                    throw Malformed(line: l, why: "bad label name")
                }
                i += 2
                var value = ""
                while true {
                    guard i < chars.count else { throw Malformed(line: l, why: "unterminated label value") }
                    let c = chars[i]
                    if c == "\"" { i += 1; break }
                    if c == "\\" {
                        guard i + 1 < chars.count, ["\\", "\"", "n"].contains(chars[i + 1]) else {
                            throw Malformed(line: l, why: "bad escape")
                        }
                        value.unicodeScalars.append(chars[i + 1] == "n" ? "\n" : chars[i + 1])
                        i += 2
                        continue
                    }
                    value.unicodeScalars.append(c)
                    i += 1
                }
                guard labels[key] == nil else { throw Malformed(line: l, why: "duplicate label") }
                labels[key] = value
                if i < chars.count, chars[i] == "," { i += 1 }
            }
        }
        guard i < chars.count, chars[i] == " " else { throw Malformed(line: l, why: "no space before the value") }
        chars = Array(chars[(i + 1)...])
        let fields = String(String.UnicodeScalarView(chars)).split(separator: " ")
        guard fields.count == 1 || fields.count == 2 else { throw Malformed(line: l, why: "bad value/timestamp") }
        let text = String(fields[0])
        let value: Double
        switch text {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let v = Double(text), text.unicodeScalars.allSatisfy({ "0123456789.eE+-".unicodeScalars.contains($0) }) else {
                throw Malformed(line: l, why: "bad value")
            }
            value = v
        }
        if fields.count == 2, Int64(fields[1]) == nil { throw Malformed(line: l, why: "bad timestamp") }
        return Sample(name: name, labels: labels, value: value)
    }

    /// The one sample of `name` whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let hits = samples.filter { s in s.name == name && labels.allSatisfy { s.labels[$0.key] == $0.value } }
        return hits.count == 1 ? hits[0].value : nil
    }

    /// Sum over every sample of `name` whose labels include `labels`.
    func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        samples.filter { s in s.name == name && labels.allSatisfy { s.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }
}
