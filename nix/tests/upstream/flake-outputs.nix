# The flake's outputs, computed from inputs that point at the upstream
# sources (as nix/tests/upstream/default.nix does) and the stand-in pkgs,
# forced where they do not need nixpkgs itself: what `nix flake show` and
# `nix flake check` would evaluate first. The stand-in pkgs refuses
# pkgs.system, which recent nixpkgs deprecates.
{ upstream }:
let
  up = toString upstream;
  lib = import "${up}/nixpkgs.lib/lib";
  pkgs = import ./pkgs.nix { inherit lib; path = ./nixpkgs; };
  inputs = {
    nixpkgs = { inherit lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: pkgs); outPath = toString ./nixpkgs; };
    home-manager = { nixosModules.home-manager = "${up}/home-manager/nixos"; outPath = "${up}/home-manager"; };
    sops-nix = { nixosModules.sops = "${up}/sops-nix/modules/sops"; outPath = "${up}/sops-nix"; };
    impermanence = { nixosModules.impermanence = import "${up}/impermanence/nixos.nix"; outPath = "${up}/impermanence"; };
    nix-snapshotter = import ./nix-snapshotter.nix;
  };
  flake = import ../../../flake.nix;
  self = flake.outputs (inputs // { inherit self; }) // { outPath = ../../..; };
  perSystem = f: lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] f;
in
{
  inputs = builtins.attrNames flake.inputs;
  nixosModules = builtins.attrNames self.nixosModules;
  homeManagerModules = builtins.attrNames self.homeManagerModules;
  packages = perSystem (s: lib.mapAttrs (_: p: p.name) self.packages.${s});
  apps = perSystem (s: lib.mapAttrs (_: a: { inherit (a) type program; }) self.apps.${s});
  devShells = perSystem (s: lib.mapAttrs (_: d: d.name) self.devShells.${s});
  checks = perSystem (s: builtins.attrNames self.checks.${s});
  # lib.agentImages with the stand-in nix-snapshotter: which agents get an image, and its reference.
  agentImages = lib.mapAttrs (_: i: i.image) (self.lib.agentImages {
    inherit pkgs;
    town = { agents.ada = { uid = 1100; cloud.enable = true; packages = [ pkgs.git ]; }; agents.bo.uid = 1101; };
  });
  # The operator's image: what it holds and runs.
  operatorImage = let i = self.packages.x86_64-linux.operator-image; in {
    inherit (i) name config imageTag;
    contents = map (p: p.name) i.contents;
  };
  toTown = self.lib.toTown { package = null; domain = "forge.local"; agents.ada = { uid = 1100; packages = [ pkgs.git ]; }; };
}
