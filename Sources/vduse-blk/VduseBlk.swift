import ArgumentParser

/// The `vduse-blk` command: create, list and destroy VDUSE virtio-blk devices;
/// make and check zstd images.
@main
struct VduseBlk: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vduse-blk",
        abstract: "A userspace virtio-blk device served through VDUSE.",
        subcommands: [CreateCommand.self, ListCommand.self, DestroyCommand.self, StatsCommand.self, ResizeCommand.self,
                      ImageCommand.self])
}
