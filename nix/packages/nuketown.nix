# The nuketown workspace: the `nuketown` CLI (and town hall daemon) and the
# root entry point `nuketown-elevate`.
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

  postInstall = ''
    wrapProgram $out/bin/nuketown --suffix PATH : ${lib.makeBinPath [ openssh git gnupg acl tmux util-linux shadow btrfs-progs ]}
  '';

  meta = {
    description = "AI agents as real Unix users on real machines";
    license = lib.licenses.mit;
    mainProgram = "nuketown";
    platforms = lib.platforms.linux;
  };
}
