# The nuketown workspace: the `nuketown` CLI (and town hall daemon), the
# root entry point `nuketown-elevate` and the chat bridge `nuketown-chat`.
{ lib, rustPlatform, pkg-config, makeWrapper, openssh, git, gnupg, acl, tmux, util-linux, shadow, btrfs-progs }:

rustPlatform.buildRustPackage {
  pname = "nuketown";
  version = (builtins.fromTOML (builtins.readFile ../../Cargo.toml)).workspace.package.version;

  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [ ../../Cargo.toml ../../Cargo.lock ../../crates ../../examples ];
  };
  cargoLock.lockFile = ../../Cargo.lock;

  nativeBuildInputs = [ pkg-config makeWrapper ];

  # The end-to-end tests make real users and mount filesystems: they run in
  # the NixOS VM tests (nix/tests), not in the build sandbox.
  cargoTestFlags = [ "--lib" ];

  # The chat bridge again, built for size (the `lean` profile: opt-level s,
  # fat LTO): one long-lived process per agent whose resident memory is
  # mostly its own code pages, 44.6 MB as a release build and 25.6 MB so
  # (docs/benchmarks.md). It replaces the release build's nuketown-chat.
  postBuild = ''
    cargo build --offline -j "$NIX_BUILD_CORES" --profile lean -p nuketown --bin nuketown-chat
  '';

  postInstall = ''
    install -Dm755 target/lean/nuketown-chat $out/bin/nuketown-chat
    wrapProgram $out/bin/nuketown --suffix PATH : ${lib.makeBinPath [ openssh git gnupg acl tmux util-linux shadow btrfs-progs ]}
  '';

  meta = {
    description = "AI agents as real Unix users on real machines";
    license = lib.licenses.mit;
    mainProgram = "nuketown";
    platforms = lib.platforms.linux;
  };
}
