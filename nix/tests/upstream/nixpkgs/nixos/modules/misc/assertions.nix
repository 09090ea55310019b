# Stand-in for nixpkgs nixos/modules/misc/assertions.nix (nixpkgs itself is
# not available here): the `assertions` and `warnings` options with upstream's
# names and types. home-manager imports this file as
# `pkgs.path + "/nixos/modules/misc/assertions.nix"`, so it sits at the same
# path in the stand-in nixpkgs tree; the NixOS evaluation imports it too.
{ lib, ... }:
{
  options = {
    assertions = lib.mkOption {
      type = lib.types.listOf lib.types.unspecified;
      internal = true;
      default = [ ];
      description = "Conditions that must hold; `{ assertion, message }`.";
    };
    warnings = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      internal = true;
      default = [ ];
      description = "Warnings printed when building the configuration.";
    };
  };
}
