# Nuketown: AI agents as real Unix users. The options under `nuketown.*` are
# exactly the Town schema (docs/schema.md), the module guide's short forms
# included; the module projects them to /etc/nuketown/town.json, which every
# nuketown binary reads, and implements the town the NixOS way: users,
# home-manager, sops-nix, btrfs rollback, impermanence, udev, sudo (or
# sudo-rs) through the town hall.
#
# home-manager is required; sops-nix and impermanence are used when their
# modules are imported (nuketown.nixosModules.default imports all three).
# One concern a file, sharing ./nuketown/common.nix:
{
  imports = [
    ./nuketown/options.nix # the options (the schema)
    ./nuketown/town.nix # town.json, the package, town-wide checks, shared dirs
    ./nuketown/agents.nix # users, home-manager, sops-nix, impermanence, udev, chat
    ./nuketown/hall.nix # the town hall, sudo rules, the boot round, nftables
    ./nuketown/rooms.nix # the Matrix rooms keeper
    ./nuketown/rollback.nix # btrfs homes levelled at boot
    ./nuketown/humans.nix # portal commands, the approver, git's allowed signers
  ];
}
