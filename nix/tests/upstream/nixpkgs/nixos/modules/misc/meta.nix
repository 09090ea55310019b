# Stand-in for nixpkgs nixos/modules/misc/meta.nix and the
# modules/generic/meta-maintainers.nix it imports: the `meta.*` options with
# upstream's names (home-manager imports this file as
# `pkgs.path + "/nixos/modules/misc/meta.nix"`).
{ lib, ... }:
let
  # Upstream keeps every module's definitions; so does the stand-in.
  keepDefs = t: t // { merge = _loc: defs: defs; };
in
{
  options.meta = {
    maintainers = lib.mkOption {
      type = keepDefs (lib.types.listOf lib.types.raw);
      default = [ ];
      internal = true;
      description = "Maintainers of each module.";
    };
    teams = lib.mkOption {
      type = keepDefs (lib.types.listOf lib.types.raw);
      default = [ ];
      internal = true;
      description = "Teams maintaining each module.";
    };
    doc = lib.mkOption {
      type = keepDefs lib.types.path;
      internal = true;
      description = "Documentation prologue for the module's options.";
    };
    buildDocsInSandbox = lib.mkOption {
      type = keepDefs lib.types.bool;
      internal = true;
      default = true;
      description = "Whether the module's options doc builds in the sandbox.";
    };
  };
}
