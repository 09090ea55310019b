# examples/example.nix, the example town (the same as examples/town.toml).
{
  allowUnfree = true; # ada runs Claude Code
  module = { imports = [ ../../../../examples/example.nix ]; };
}
