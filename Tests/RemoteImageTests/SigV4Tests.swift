// SigV4Tests.swift - the SigV4 signer against AWS's published expected values only.
// No expected string below was produced by running this signer.
import ImageOverlay
import SystemSupport
import Foundation
import RemoteImage
import XCTest

// MARK: - AWS SigV4 test suite (generic service)
//
// Source: AWS's SigV4 test suite ("aws-sig-v4-test-suite", documented at
// https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html), in the form
// AWS ships it in github.com/awslabs/aws-c-auth, tests/aws-signing-test-suite/v4/<case>/
// (last changed in commit 3281f8692e6fd10562c4585a4dded5c16b322698). For each case the
// input is that directory's request.txt (+ context.json), and the expected values are
// header-canonical-request.txt, header-string-to-sign.txt and the Authorization line of
// header-signed-request.txt, copied verbatim. Every case's context.json: access key
// AKIDEXAMPLE, secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, region us-east-1,
// service "service", timestamp 2015-08-30T12:36:00Z.

private let suiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
private let suiteTime: time_t = 1_440_938_160  // 2015-08-30T12:36:00Z
private let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/// One suite case's request.txt (and context.json), as the signer's arguments.
private struct SuiteInput {
    var method = "GET"
    var path = "/"
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var token: String? = nil
    var normalize = true
    var payloadHash = emptyHash
}

/// One suite case's published outputs.
private struct SuiteExpected {
    var canonicalRequest: String
    var stringToSign: String
    var authorization: String
}

// Inputs: each comment is the case's request.txt request line (and extra headers),
// every request also has `Host:example.amazonaws.com`.
private let suiteInputs: [String: SuiteInput] = [
    // GET / HTTP/1.1
    "get-vanilla": SuiteInput(),
    // GET /?Param2=value2&Param1=value1 HTTP/1.1
    "get-vanilla-query-order-key-case": SuiteInput(query: [("Param2", "value2"), ("Param1", "value1")]),
    // GET /?Param-3=Value3&Param=Value2&%E1%88%B4=Value1 HTTP/1.1 (query given decoded)
    "get-vanilla-query-order-encoded": SuiteInput(
        query: [("Param-3", "Value3"), ("Param", "Value2"), ("\u{1234}", "Value1")]),
    // GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=(same) HTTP/1.1
    "get-vanilla-query-unreserved": SuiteInput(query: [(unreserved, unreserved)]),
    // GET /?ሴ=bar HTTP/1.1
    "get-vanilla-utf8-query": SuiteInput(query: [("\u{1234}", "bar")]),
    // My-Header1: value1 / My-Header2: "a   b   c"
    "get-header-value-trim": SuiteInput(headers: [("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")]),
    // My-Header1:value2 / My-Header1:value2 / My-Header1:value1
    "get-header-key-duplicate": SuiteInput(
        headers: [("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")]),
    // My-Header1:value4 / value1 / value3 / value2 (four lines)
    "get-header-value-order": SuiteInput(
        headers: [("My-Header1", "value4"), ("My-Header1", "value1"), ("My-Header1", "value3"), ("My-Header1", "value2")]),
    // My-Header1:value1 folded over three lines
    "get-header-value-multiline": SuiteInput(headers: [("My-Header1", "value1\n  value2\n     value3")]),
    // GET /ሴ HTTP/1.1
    "get-utf8": SuiteInput(path: "/\u{1234}"),
    // GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1
    "get-unreserved": SuiteInput(path: "/" + unreserved),
    // GET /example space/ HTTP/1.1 (normalize true)
    "get-space-normalized": SuiteInput(path: "/example space/"),
    // GET //example// HTTP/1.1 (normalize true, then false)
    "get-slashes-normalized": SuiteInput(path: "//example//"),
    "get-slashes-unnormalized": SuiteInput(path: "//example//", normalize: false),
    // GET /example1/example2/../.. HTTP/1.1 (normalize true)
    "get-relative-relative-normalized": SuiteInput(path: "/example1/example2/../.."),
    // GET /example/.. HTTP/1.1 (normalize false)
    "get-relative-unnormalized": SuiteInput(path: "/example/..", normalize: false),
    // GET /./example HTTP/1.1 (normalize true)
    "get-slash-pointless-dot-normalized": SuiteInput(path: "/./example"),
    // POST / HTTP/1.1
    "post-vanilla": SuiteInput(method: "POST"),
    // POST /?Param1=value1 HTTP/1.1
    "post-vanilla-query": SuiteInput(method: "POST", query: [("Param1", "value1")]),
    // POST / with Content-Type:application/x-www-form-urlencoded, Content-Length:13, body
    // Param1=value1, sign_body true (the body hash is the one published in the canonical request).
    "post-x-www-form-urlencoded": SuiteInput(
        method: "POST",
        headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "13"),
                  ("X-Amz-Content-Sha256", formBodyHash)],
        payloadHash: formBodyHash),
    // GET / with context.json token 6e86...4267
    "get-vanilla-with-session-token": SuiteInput(
        token: "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
    // POST / with context.json token AQoD...BA== (signed; post-sts-header-after leaves it unsigned)
    "post-sts-header-before": SuiteInput(method: "POST", token: stsToken),
]

private let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
private let formBodyHash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
private let stsToken = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

// Expected: verbatim from the case directories named by the keys.
private let suiteExpected: [String: SuiteExpected] = [
        "get-vanilla": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        "get-vanilla-query-order-key-case": SuiteExpected(
            canonicalRequest: #"""
                GET
                /
                Param1=value1&Param2=value2
                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        "get-vanilla-query-order-encoded": SuiteExpected(
            canonicalRequest: #"""
                GET
                /
                %E1%88%B4=Value1&Param=Value2&Param-3=Value3
                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                868294f5c38bd141c4972a373a76654f1418a8e4fc18b2e7903ae45e8ae0ec71
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"),
        "get-vanilla-query-unreserved": SuiteExpected(
            canonicalRequest: #"""
                GET
                /
                -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
        "get-vanilla-utf8-query": SuiteExpected(
            canonicalRequest: #"""
                GET
                /
                %E1%88%B4=bar
                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
        "get-header-value-trim": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                my-header1:value1
                my-header2:"a b c"
                x-amz-date:20150830T123600Z

                host;my-header1;my-header2;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        "get-header-key-duplicate": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                my-header1:value2,value2,value1
                x-amz-date:20150830T123600Z

                host;my-header1;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
        "get-header-value-order": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                my-header1:value4,value1,value3,value2
                x-amz-date:20150830T123600Z

                host;my-header1;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
        "get-header-value-multiline": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                my-header1:value1 value2 value3
                x-amz-date:20150830T123600Z

                host;my-header1;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                e99419459a677bc11de234014be3c4e72c1ea5b454ceb58b613061f5d7a162e8
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd"),
        "get-utf8": SuiteExpected(
            canonicalRequest: #"""
                GET
                /%E1%88%B4

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        "get-unreserved": SuiteExpected(
            canonicalRequest: #"""
                GET
                /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
        "get-space-normalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                /example%20space/

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"),
        "get-slashes-normalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                /example/

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                cb96b4ac96d501f7c5c15bc6d67b3035061cfced4af6585ad927f7e6c985c015
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"),
        "get-slashes-unnormalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                //example//

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                528ec3105ee1f34ab014bb0a1a45da0ed2742a4fea3555149e5b4d5d201eb240
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5"),
        "get-relative-relative-normalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        "get-relative-unnormalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                /example/..

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                0511f456aa502b456d135fcb9d749374a55228f9dbeedda1eacf659e05b0615b
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=eca7ead57bb5aa5c8e28007acd4ff04e1ff9a0ff3b237ec1554a184887ff9282"),
        "get-slash-pointless-dot-normalized": SuiteExpected(
            canonicalRequest: #"""
                GET
                /example

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                214d50c111a8edc4819da6a636336472c916b5240f51e9a51b5c3305180cf702
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"),
        "post-vanilla": SuiteExpected(
            canonicalRequest: #"""
                POST
                /

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        "post-vanilla-query": SuiteExpected(
            canonicalRequest: #"""
                POST
                /
                Param1=value1
                host:example.amazonaws.com
                x-amz-date:20150830T123600Z

                host;x-amz-date
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
        "post-x-www-form-urlencoded": SuiteExpected(
            canonicalRequest: #"""
                POST
                /

                content-length:13
                content-type:application/x-www-form-urlencoded
                host:example.amazonaws.com
                x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
                x-amz-date:20150830T123600Z

                content-length;content-type;host;x-amz-content-sha256;x-amz-date
                9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"),
        "get-vanilla-with-session-token": SuiteExpected(
            canonicalRequest: #"""
                GET
                /

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z
                x-amz-security-token:6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267

                host;x-amz-date;x-amz-security-token
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                067b36aa60031588cea4a4cde1f21215227a047690c72247f1d70b32fbbfad2b
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
        "post-sts-header-before": SuiteExpected(
            canonicalRequest: #"""
                POST
                /

                host:example.amazonaws.com
                x-amz-date:20150830T123600Z
                x-amz-security-token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==

                host;x-amz-date;x-amz-security-token
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
                """#,
            stringToSign: #"""
                AWS4-HMAC-SHA256
                20150830T123600Z
                20150830/us-east-1/service/aws4_request
                c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6
                """#,
            authorization: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
]

/// The value of header `name` (case-insensitive) in `headers`, if present.
private func value(_ name: String, in headers: [(String, String)]) -> String? {
    headers.first { $0.0.lowercased() == name.lowercased() }?.1
}

final class SigV4Tests: XCTestCase {
    private func checkSuite(_ names: [String], file: StaticString = #filePath, line: UInt = #line) {
        for name in names {
            guard let input = suiteInputs[name], let expected = suiteExpected[name] else {
                XCTFail("no suite case \(name)", file: file, line: line)
                continue
            }
            let signer = SigV4Signer(
                credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: suiteSecret,
                                            sessionToken: input.token),
                region: "us-east-1", service: "service")
            let canonical = signer.canonicalRequest(
                method: input.method, host: "example.amazonaws.com", path: input.path, query: input.query,
                headers: input.headers, payloadHash: input.payloadHash, timestamp: suiteTime,
                normalizePath: input.normalize)
            XCTAssertEqual(canonical, expected.canonicalRequest, name, file: file, line: line)
            XCTAssertEqual(signer.stringToSign(canonicalRequest: canonical, timestamp: suiteTime),
                           expected.stringToSign, name, file: file, line: line)
            let added = signer.sign(
                method: input.method, host: "example.amazonaws.com", path: input.path, query: input.query,
                headers: input.headers, payloadHash: input.payloadHash, timestamp: suiteTime,
                normalizePath: input.normalize)
            XCTAssertEqual(value("Authorization", in: added), expected.authorization, name, file: file, line: line)
            XCTAssertEqual(value("X-Amz-Date", in: added), "20150830T123600Z", name, file: file, line: line)
            XCTAssertEqual(value("X-Amz-Security-Token", in: added), input.token, name, file: file, line: line)
            XCTAssertNil(value("x-amz-content-sha256", in: added), "only S3 gets it from the signer", file: file, line: line)
        }
    }

    func testSuiteVanillaAndQuery() {
        checkSuite(["get-vanilla", "get-vanilla-query-order-key-case", "get-vanilla-query-order-encoded",
                    "get-vanilla-query-unreserved", "get-vanilla-utf8-query", "post-vanilla", "post-vanilla-query"])
    }

    func testSuiteHeaders() {
        checkSuite(["get-header-value-trim", "get-header-key-duplicate", "get-header-value-order",
                    "get-header-value-multiline", "post-x-www-form-urlencoded"])
    }

    func testSuitePaths() {
        checkSuite(["get-utf8", "get-unreserved", "get-space-normalized", "get-slashes-normalized",
                    "get-slashes-unnormalized", "get-relative-relative-normalized", "get-relative-unnormalized",
                    "get-slash-pointless-dot-normalized"])
    }

    func testSuiteSessionTokens() {
        checkSuite(["get-vanilla-with-session-token", "post-sts-header-before"])
    }

    func testEverySuiteCaseHasInputAndExpectedValues() {
        XCTAssertEqual(Set(suiteInputs.keys), Set(suiteExpected.keys))
    }

    // MARK: - AWS General Reference: deriving the signing key (IAM ListUsers example)
    //
    // Source: AWS General Reference, Signature Version 4 signing process, "Create a canonical
    // request" / "Calculate the signature" (docs.aws.amazon.com/general/latest/gr/
    // sigv4-create-canonical-request.html and sigv4-calculate-signature.html): request
    // GET https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08 with
    // Content-Type: application/x-www-form-urlencoded; charset=utf-8, X-Amz-Date 20150830T123600Z,
    // AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, iam.
    func testGeneralReferenceIAMExample() {
        let signer = SigV4Signer(
            credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: suiteSecret),
            region: "us-east-1", service: "iam")
        let key = signer.signingKey(dateStamp: "20150830")
        XCTAssertEqual(key.map { String(format: "%02x", $0) }.joined(),
                       "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9")
        let query = [("Action", "ListUsers"), ("Version", "2010-05-08")]
        let headers = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")]
        let canonical = signer.canonicalRequest(
            method: "GET", host: "iam.amazonaws.com", path: "/", query: query, headers: headers,
            payloadHash: emptyHash, timestamp: suiteTime, normalizePath: true)
        XCTAssertEqual(canonical, #"""
            GET
            /
            Action=ListUsers&Version=2010-05-08
            content-type:application/x-www-form-urlencoded; charset=utf-8
            host:iam.amazonaws.com
            x-amz-date:20150830T123600Z

            content-type;host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """#)
        XCTAssertEqual(signer.stringToSign(canonicalRequest: canonical, timestamp: suiteTime), #"""
            AWS4-HMAC-SHA256
            20150830T123600Z
            20150830/us-east-1/iam/aws4_request
            f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59
            """#)
        let added = signer.sign(method: "GET", host: "iam.amazonaws.com", path: "/", query: query, headers: headers,
                                payloadHash: emptyHash, timestamp: suiteTime, normalizePath: true)
        XCTAssertEqual(value("Authorization", in: added),
                       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
                       + "SignedHeaders=content-type;host;x-amz-date, "
                       + "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    }

    // MARK: - Amazon S3 API Reference examples
    //
    // Source: Amazon S3 API Reference, "Signature Calculations for the Authorization Header:
    // Transferring Payload in a Single Chunk (AWS Signature Version 4)",
    // https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, section
    // "Examples: Signature Calculations". Shared context: AKIAIOSFODNN7EXAMPLE /
    // wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, us-east-1, s3, 20130524T000000Z, host
    // examplebucket.s3.amazonaws.com. The page prints the Authorization header without a space
    // after each comma; the signer writes ", " as the generic suite does, so the comparison
    // drops those spaces (S3 accepts both).

    private let s3Time: time_t = 1_369_353_600  // 2013-05-24T00:00:00Z
    private let s3Host = "examplebucket.s3.amazonaws.com"
    private let s3Signer = SigV4Signer(
        credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                    secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "s3")

    private func checkS3(method: String = "GET", path: String, query: [(String, String)] = [],
                         headers: [(String, String)] = [], payloadHash: String = emptyHash,
                         canonicalRequest: String, stringToSign: String, authorization: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        let canonical = s3Signer.canonicalRequest(method: method, host: s3Host, path: path, query: query,
                                                  headers: headers, payloadHash: payloadHash, timestamp: s3Time)
        XCTAssertEqual(canonical, canonicalRequest, file: file, line: line)
        XCTAssertEqual(s3Signer.stringToSign(canonicalRequest: canonical, timestamp: s3Time), stringToSign,
                       file: file, line: line)
        let added = s3Signer.sign(method: method, host: s3Host, path: path, query: query, headers: headers,
                                  payloadHash: payloadHash, timestamp: s3Time)
        XCTAssertEqual(value("Authorization", in: added)?.replacingOccurrences(of: ", ", with: ","), authorization,
                       file: file, line: line)
        XCTAssertEqual(value("x-amz-date", in: added), "20130524T000000Z", file: file, line: line)
        XCTAssertEqual(value("x-amz-content-sha256", in: added), payloadHash, file: file, line: line)
        XCTAssertNil(value("x-amz-security-token", in: added), file: file, line: line)
    }

    // "Example: GET Object": the first 10 bytes of test.txt (Range: bytes=0-9).
    func testS3GetObjectRangeExample() {
        checkS3(path: "/test.txt", headers: [("Range", "bytes=0-9")], canonicalRequest: #"""
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """#, stringToSign: #"""
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972
            """#, authorization: "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    // "Example: PUT Object": test$file.text, body "Welcome to Amazon S3." (its published hash),
    // Date and x-amz-storage-class headers. Shows '$' in a key encoded as %24.
    func testS3PutObjectExample() {
        let bodyHash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        checkS3(method: "PUT", path: "/test$file.text",
                headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                payloadHash: bodyHash, canonicalRequest: #"""
            PUT
            /test%24file.text

            date:Fri, 24 May 2013 00:00:00 GMT
            host:examplebucket.s3.amazonaws.com
            x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072
            x-amz-date:20130524T000000Z
            x-amz-storage-class:REDUCED_REDUNDANCY

            date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class
            44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072
            """#, stringToSign: #"""
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d
            """#, authorization: "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
                + "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    // "Example: GET Bucket Lifecycle": GET ?lifecycle (a parameter with no value).
    func testS3GetBucketLifecycleExample() {
        checkS3(path: "/", query: [("lifecycle", "")], canonicalRequest: #"""
            GET
            /
            lifecycle=
            host:examplebucket.s3.amazonaws.com
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """#, stringToSign: #"""
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca
            """#, authorization: "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
                + "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    // "Example: Get Bucket (List Objects)": GET ?max-keys=2&prefix=J (given here in the other
    // order, so the signer's sorting is exercised).
    func testS3ListObjectsExample() {
        checkS3(path: "/", query: [("prefix", "J"), ("max-keys", "2")], canonicalRequest: #"""
            GET
            /
            max-keys=2&prefix=J
            host:examplebucket.s3.amazonaws.com
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """#, stringToSign: #"""
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7
            """#, authorization: "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
                + "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    // MARK: - Helpers (expected values from the rules, not from vectors)

    // RFC 3986 unreserved kept; everything else %XX uppercase; '/' only with keepingSlashes.
    func testEncodeURIComponent() {
        XCTAssertEqual(SigV4Signer.encodeURIComponent("AZaz09-._~"), "AZaz09-._~")
        XCTAssertEqual(SigV4Signer.encodeURIComponent("a b+c/d=e&f$*%"), "a%20b%2Bc%2Fd%3De%26f%24%2A%25")
        XCTAssertEqual(SigV4Signer.encodeURIComponent("a b/c", keepingSlashes: true), "a%20b/c")
        XCTAssertEqual(SigV4Signer.encodeURIComponent("\u{1234}"), "%E1%88%B4")
        XCTAssertEqual(SigV4Signer.encodePath("images/disk 1.img"), "/images/disk%201.img")
        XCTAssertEqual(SigV4Signer.canonicalQueryString([("b", "2"), ("a", "x y"), ("a", "1")]), "a=1&a=x%20y&b=2")
    }

    // For S3 the URL path built with encodePath is exactly the canonical URI that is signed.
    func testS3URLPathIsTheSignedCanonicalURI() {
        let path = "/images/vm disk+1/ሴ.img"
        let canonical = s3Signer.canonicalRequest(method: "GET", host: s3Host, path: path, query: [], headers: [],
                                                  payloadHash: emptyHash, timestamp: s3Time)
        XCTAssertEqual(canonical.split(separator: "\n", omittingEmptySubsequences: false)[1],
                       Substring(SigV4Signer.encodePath(path)))
        XCTAssertEqual(SigV4Signer.encodePath(path), "/images/vm%20disk%2B1/%E1%88%B4.img")
    }

    func testAmzTimestamp() {
        XCTAssertTrue(SigV4Signer.amzTimestamp(suiteTime) == ("20150830T123600Z", "20150830"))
        XCTAssertTrue(SigV4Signer.amzTimestamp(0) == ("19700101T000000Z", "19700101"))
        XCTAssertTrue(SigV4Signer.amzTimestamp(951_782_400) == ("20000229T000000Z", "20000229"))
        XCTAssertTrue(SigV4Signer.amzTimestamp(4_102_444_799) == ("20991231T235959Z", "20991231"))
    }
}
