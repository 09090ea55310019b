# The example NixOS town (examples/example.nix) projected to town.json, without
# nixpkgs: packages stand in as their names. CI feeds the result to the Rust
# parser and checks it equals examples/town.toml (crates/nuketown/tests/nix.rs).
let
  pkgs = { git = { pname = "git"; }; ripgrep = { pname = "ripgrep"; }; };
  example = import ../../examples/example.nix { inherit pkgs; };
in
import ../lib/town.nix example.nuketown
