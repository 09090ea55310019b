# The Town projection: `nuketown.*` option values -> the Town JSON shape every
# Rust binary reads (crates/town). Plain Nix (builtins only), so it evaluates
# without nixpkgs: CI checks its output with the Rust parser.
#
# The keys are already the schema's; this only drops what is NixOS-only
# (`package`, `sudoShim`, `buildImage`, `cloudImages`, `authorizedKeys`, `agents.<name>.extraHomeConfig`,
# `agents.<name>.claudeCode.package`)
# and null values, and turns packages into their names.
let
  packageName = p:
    if builtins.isString p then p
    else if builtins.isAttrs p then (p.pname or p.name or "package")
    else toString p;

  clean = v:
    if builtins.isAttrs v && !(v ? outPath) then
      builtins.listToAttrs (builtins.concatMap
        (k:
          let x = v.${k}; in
          if k == "_module" || x == null then [ ]
          else [{ name = k; value = clean x; }])
        (builtins.attrNames v))
    else if builtins.isList v then map clean v
    else if builtins.isAttrs v then packageName v
    else if builtins.isPath v then toString v
    else v;

  without = names: set: builtins.removeAttrs set names;

  agent = a:
    clean (without [ "extraHomeConfig" "packages" "claudeCode" ] a) // {
      packages = map packageName (a.packages or [ ]);
    } // (if a ? claudeCode then { claudeCode = clean (without [ "package" ] a.claudeCode); } else { });
in
cfg:
clean (without [ "package" "sudoShim" "agents" "basePackages" "buildImage" "cloudImages" "authorizedKeys" ] cfg) // {
  basePackages = map packageName (cfg.basePackages or [ ]);
  agents = builtins.mapAttrs (_: agent) (cfg.agents or { });
}
