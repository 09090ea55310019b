# Evaluates the NixOS module on the example town with nixpkgs' lib alone:
# the NixOS options the module sets are declared here as loose stand-ins and
# pkgs builders return stand-in derivations. Needs a nixpkgs lib:
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix --arg lib 'import <nixpkgs/lib>'
# Returns what the module produced, for crates/nuketown/tests/nix.rs to check.
{ lib }:
let
  inherit (lib) mkOption types;
  drv = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  pkgs = {
    runCommand = name: _: _: drv name;
    writeText = name: _: drv name;
    writeShellScriptBin = name: _: drv name;
    acl = drv "acl";
    bashInteractive = drv "bash";
    git = drv "git" // { pname = "git"; };
    ripgrep = drv "ripgrep" // { pname = "ripgrep"; };
  };
  loose = mkOption { type = types.anything; default = { }; };
  stubs = { ... }: {
    options = {
      networking.hostName = mkOption { type = types.str; default = "forge"; };
      system.stateVersion = mkOption { type = types.str; default = "25.05"; };
      assertions = mkOption { type = types.listOf types.attrs; default = [ ]; };
      users.users = mkOption { type = types.attrsOf types.attrs; default = { }; };
      users.groups = mkOption { type = types.attrsOf types.attrs; default = { }; };
      environment.etc = mkOption { type = types.attrsOf types.attrs; default = { }; };
      environment.systemPackages = mkOption { type = types.listOf types.anything; default = [ ]; };
      environment.persistence = mkOption { type = types.attrsOf types.anything; default = { }; };
      services.udev.packages = mkOption { type = types.listOf types.anything; default = [ ]; };
      security.sudo.extraRules = mkOption { type = types.listOf types.attrs; default = [ ]; };
      security.sudo.extraConfig = mkOption { type = types.lines; default = ""; };
      systemd.services = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.sockets = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      fileSystems = loose;
      boot = loose;
      home-manager.users = mkOption { type = types.attrsOf types.anything; default = { }; };
      sops.secrets = mkOption { type = types.attrsOf types.anything; default = { }; };
    };
  };
  eval = lib.evalModules {
    specialArgs = { inherit pkgs; };
    modules = [
      stubs
      ../modules/nixos.nix
      ../../examples/example.nix
      { nuketown.package = drv "nuketown"; }
    ];
  };
  c = eval.config;
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  town = import ../lib/town.nix c.nuketown;
  users = lib.mapAttrs (_: u: { inherit (u) uid group home homeMode extraGroups isNormalUser; }) c.users.users;
  approvers = c.users.groups.nuketown-approvers.members;
  sudoRules = c.security.sudo.extraRules;
  sudoConfig = c.security.sudo.extraConfig;
  tmpfiles = c.systemd.tmpfiles.rules;
  hallExec = c.systemd.services.nuketown-hall.serviceConfig.ExecStart;
  sockets = lib.mapAttrs (_: s: s.socketConfig) c.systemd.sockets;
  hmFiles = lib.mapAttrs (_: u: lib.attrNames (u.home.file or { })) c.home-manager.users;
  hmGit = lib.mapAttrs (_: u: { inherit (u.programs.git) userName userEmail; signing = u.programs.git.signing or null; }) c.home-manager.users;
  claude = lib.mapAttrs (_: u: u.programs.claude-code or null) c.home-manager.users;
  persistence = c.environment.persistence;
  udevPackages = map (p: p.name) c.services.udev.packages;
}
