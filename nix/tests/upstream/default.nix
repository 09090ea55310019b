# Evaluates one scenario (nix/tests/upstream/scenarios/<name>.nix) of
# nuketown's NixOS module against the real upstream sources: nixpkgs `lib`
# (lib.evalModules), home-manager's NixOS module, impermanence and sops-nix,
# wired exactly as flake.nix wires them (the flake's outputs are computed
# from inputs that point at those sources). Only core NixOS options are
# stood in (nixos.nix, nixos-defaults.nix, utils.nix), and `pkgs` builders
# (pkgs.nix): nixpkgs itself is not available here.
#
#   nix-instantiate --eval --strict --json nix/tests/upstream \
#     --arg upstream /path/to/nix-upstream --argstr scenario laptop-systemd-stage1
#
# A scenario is `{ module; imports ? ({ self, inputs }: [ self.nixosModules.default ]);
# allowUnfree ? false; unstable ? false; }`: the configuration's own module,
# which of the flake's (or the upstream flakes') modules it imports, whether
# the stand-in nixpkgs allows unfree packages, and whether it has an
# `unstable` package set (an overlay many configurations add).
#
# Returns, for crates/nuketown/tests/nix_upstream.rs to check:
# - failedAssertions, warnings: of the whole configuration (home-manager
#   forwards its users' assertions and warnings);
# - nixos: every NixOS option nuketown's module defines, its merged value
#   forced completely (derivations shown as their store path);
# - home.<agent>: the same for every home-manager option the module defines
#   for the agent, plus the text of the start-up files home-manager writes;
# - town: /etc/nuketown/town.json as the module writes it;
# - sopsManifest: the secrets sops-nix would install;
# - approvers: each home-manager user's desktop approver unit, or null;
# - authorizedKeys: config.nuketown.authorizedKeys;
# - checks: nix/tests/lib/module-checks.nix on this configuration;
# - images: each cloud agent's image, as buildImage (the stand-in,
#   nix-snapshotter.nix) was asked for it, and its reference.
{ upstream, scenario }:
let
  lib = import "${toString upstream}/nixpkgs.lib/lib";
  spec = import (./scenarios + "/${scenario}.nix");
  allowUnfree = spec.allowUnfree or false;
  system = "x86_64-linux";
  pkgs = import ./pkgs.nix { inherit lib allowUnfree; unstable = spec.unstable or false; path = ./nixpkgs; };
  utils = import ./utils.nix { inherit lib; };

  # The flake's inputs, each exporting its modules as the upstream flake does
  # (home-manager and sops-nix by path, impermanence as a function), with
  # `outPath` a plain string as a flake input's store path is.
  up = toString upstream;
  inputs = {
    nixpkgs = { inherit lib; legacyPackages.${system} = pkgs; outPath = toString ./nixpkgs; };
    home-manager = { nixosModules.home-manager = "${up}/home-manager/nixos"; outPath = "${up}/home-manager"; };
    sops-nix = { nixosModules.sops = "${up}/sops-nix/modules/sops"; outPath = "${up}/sops-nix"; };
    impermanence = { nixosModules.impermanence = import "${up}/impermanence/nixos.nix"; outPath = "${up}/impermanence"; };
    nix-snapshotter = import ./nix-snapshotter.nix;
  };
  flake = import ../../../flake.nix;
  self = flake.outputs (inputs // { inherit self; }) // { outPath = ../../..; };

  eval = lib.evalModules {
    class = "nixos";
    specialArgs = { inherit utils; modulesPath = toString ./nixpkgs/nixos/modules; };
    modules = [
      ./nixos.nix
      ./nixos-defaults.nix
      { _module.args = { inherit pkgs; }; }
      # What a machine needs anyway, not nuketown's business; sops-install-secrets
      # itself is a Go program not in the sources here.
      ({ options, ... }: {
        config = {
          networking.hostName = "forge";
          system.stateVersion = "25.11";
          users.users.josh = { isNormalUser = true; uid = 1000; };
        } // lib.optionalAttrs (options ? home-manager.useGlobalPkgs) {
          home-manager.useGlobalPkgs = true;
        } // lib.optionalAttrs (options ? sops.package) {
          sops.package = pkgs.sops-install-secrets;
          sops.validationPackage = pkgs.sops-install-secrets;
        };
      })
      (spec.module or { })
    ] ++ (spec.imports or (_: [ self.nixosModules.default ])) { inherit self inputs; };
  };
  c = eval.config;

  # A value made JSON-able and forced: derivations as their store path,
  # functions named, everything else all the way down.
  plain = v:
    if lib.isDerivation v then v.outPath
    else if builtins.isFunction v then "<function>"
    else if builtins.isPath v then toString v
    else if builtins.isAttrs v then lib.mapAttrs (_: plain) (removeAttrs v [ "_module" ])
    else if builtins.isList v then map plain v
    else v;

  # nuketown's module as written, applied to the final configuration: which
  # options it defines (its mkIf/mkMerge/mkOrder/… resolved as the module
  # system resolves them), gathered from every file it imports.
  moduleArgs = { config = c; options = eval.options; inherit lib pkgs utils; };
  parts = file:
    let m = import file; v = if builtins.isFunction m then m moduleArgs else m; in
    [ (v.config or { }) ] ++ lib.concatMap parts (v.imports or [ ]);
  module.config = lib.mkMerge (parts ../../modules/nixos.nix);
  pieces = v:
    if builtins.isAttrs v && v ? _type then
      if v._type == "if" then (if v.condition then pieces v.content else [ ])
      else if v._type == "merge" then lib.concatMap pieces v.contents
      else if v._type == "override" || v._type == "order" then pieces v.content
      else [ v ]
    else [ v ];
  definedPaths = prefix: v: opts:
    if lib.isOption opts then [ prefix ]
    else lib.concatMap
      (piece: lib.optionals (builtins.isAttrs piece)
        (lib.concatLists (lib.mapAttrsToList (n: x: lib.optionals (opts ? ${n}) (definedPaths (prefix ++ [ n ]) x opts.${n})) piece)))
      (pieces v);
  # An option's merged value, forced. Submodule values are forced option by
  # option, each that has a value (a definition or a default): options with
  # neither (impermanence's removed-option stubs, which throw when read,
  # systemd's unset startLimitBurst) are left out, as NixOS leaves them out.
  forceOption = opt: forceMeta opt.value (opt.valueMeta or { });
  forceMeta = value: meta:
    if meta ? configuration then forceOptions meta.configuration.options
    else if meta ? attrs && builtins.isAttrs value && !(lib.isDerivation value) then lib.mapAttrs (n: v: forceMeta v (meta.attrs.${n} or { })) value
    else if meta ? list && builtins.isList value then lib.imap0 (i: v: forceMeta v (if i < builtins.length meta.list then builtins.elemAt meta.list i else { })) value
    else plain value;
  forceOptions = opts:
    lib.concatMapAttrs
      (n: o:
        if lib.isOption o then lib.optionalAttrs (o.isDefined or true) { ${n} = forceOption o; }
        else if builtins.isAttrs o then { ${n} = forceOptions o; }
        else { })
      (removeAttrs opts [ "_module" ]);
  # path -> the option's merged value, forced.
  forced = paths: opts: builtins.listToAttrs (map (p: { name = lib.concatStringsSep "." p; value = forceOption (lib.getAttrFromPath p opts); }) (lib.unique paths));

  nixosPaths = lib.filter (p: p != [ "home-manager" "users" ]) (definedPaths [ ] module.config eval.options);
  # What the module defines for each agent in home-manager (a function of
  # the agent's home-manager config).
  hmDefinitions = lib.concatMap (piece: lib.optional (piece ? home-manager.users) piece.home-manager.users) (pieces module.config);

  hmUsers = eval.options.home-manager.users.valueMeta.attrs or { };
  home = lib.mapAttrs
    (name: meta:
      let
        hm = meta.configuration;
        file = t: let f = hm.config.home.file.${t} or null; in
          if f == null then null else { inherit (f) target; source = toString f.source; text = f.source.text or f.text or null; };
        vars = hm.config.home.sessionVariablesPackage;
      in
      {
        options = forced
          (lib.concatMap (defs: lib.concatMap (d: definedPaths [ ] (removeAttrs (if builtins.isFunction d then d { inherit (hm) config; } else d) [ "imports" ]) hm.options) (pieces (defs.${name} or { }))) hmDefinitions)
          hm.options;
        files = lib.genAttrs [ ".profile" ".bash_profile" ".bashrc" ] file;
        fileTargets = lib.attrNames hm.config.home.file;
        sessionVars = { path = vars.outPath; inherit (vars) destination text; };
        gitIni = plain hm.config.programs.git.iniContent;
        # Files that are links out of the store (home-manager's
        # mkOutOfStoreSymlink builds `ln -s <target> $out`): target -> where they point.
        links = lib.concatMapAttrs
          (_: f:
            let m = builtins.match "ln -s '?([^' ]*)'? [$]out" (f.source.script or ""); in
            lib.optionalAttrs (m != null) { ${f.target} = builtins.head m; })
          hm.config.home.file;
      })
    hmUsers;

  text = d: if d == null then null else builtins.unsafeDiscardStringContext (d.text or "null");
in
let
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
in
# As NixOS: with a failed assertion, nothing else is evaluated.
if failedAssertions != [ ] then { inherit failedAssertions; } else
{
  inherit failedAssertions;
  warnings = c.warnings;
  nixos = forced nixosPaths eval.options;
  inherit home;
  hmUnits = lib.filter (lib.hasPrefix "home-manager-") (lib.attrNames c.systemd.services);
  sudoShim = let s = c.nuketown.sudoShim; in { path = s.outPath; script = s.script; };
  authorizedKeys = c.nuketown.authorizedKeys;
  # Each home-manager user's desktop approver (the humans').
  approvers = lib.mapAttrs (_: meta: plain (meta.configuration.config.systemd.user.services.nuketown-approver or null)) hmUsers;
  town = if c.environment.etc ? "nuketown/town.json" then builtins.fromJSON (text c.environment.etc."nuketown/town.json".source) else null;
  sopsManifest = if c.sops.secrets or { } == { } then null else builtins.fromJSON (text c.system.build.sops-nix-manifest);
  checks = import ../lib/module-checks.nix { inherit lib; config = c; };
  # Each cloud agent's image as the (stand-in) buildImage was asked for it.
  images = lib.mapAttrs
    (_: i: {
      inherit (i) image;
      inherit (i.buildImageArgs) name resolvedByNix config;
      root = map (p: p.pname or p.name) i.buildImageArgs.copyToRoot.paths;
    })
    c.nuketown.cloudImages;
}
