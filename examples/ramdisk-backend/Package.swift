// swift-tools-version:6.0
// A block device served from a backend written outside vduse-blk: it depends
// on this repository by path (no unsafe flags anywhere in the graph) and uses
// only the VDUSEBlk library product. See README.md beside this file.
import PackageDescription

let package = Package(
    name: "ramdisk-backend",
    dependencies: [
        .package(name: "vduse-blk", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "ramdisk-backend", dependencies: [
            .product(name: "VDUSEBlk", package: "vduse-blk"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
