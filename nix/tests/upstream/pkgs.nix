# A stand-in for nixpkgs' `pkgs`, which cannot be fetched here: builders
# return inert derivations (an attribute set with `type = "derivation"` and
# an `outPath` made from the name, so nothing is ever built), and the
# packages the evaluated modules name are such derivations too. Text builders
# keep their text (`passthru`-style `text`, `destination`, `executable`) so a
# test can read what a module would have written, e.g. the shell start-up
# files home-manager generates.
#
# Only what the modules under test reach for is here; a missing attribute is
# an evaluation error naming it, which is the point: nothing is silently faked.
{ lib
, path # the stand-in nixpkgs tree (nixos/modules/misc/{assertions,meta}.nix)
, allowUnfree ? false
, unstable ? false # an `unstable` package set, as an overlay adds one
}:
let
  # Store paths look real (32 characters of Nix's base-32 alphabet, then the name).
  hashOf = s: lib.replaceStrings [ "e" "o" "t" "u" ] [ "x" "y" "z" "w" ]
    (builtins.substring 0 32 (builtins.hashString "sha256" s));

  drv = name: extra:
    let
      pname = extra.pname or (lib.getName name);
      self = {
        type = "derivation";
        inherit name pname;
        version = extra.version or "0";
        system = "x86_64-linux";
        outPath = "/nix/store/${hashOf name}-${name}";
        drvPath = "/nix/store/${hashOf "drv-${name}"}-${name}.drv";
        outputName = "out";
        outputs = [ "out" ];
        out = self;
        bin = self;
        man = self;
        dev = self;
        lib = self;
        all = [ self ];
        meta = { mainProgram = pname; } // (extra.meta or { });
        passthru = { };
        override = _: self;
        overrideAttrs = _: self;
        overrideDerivation = _: self;
      } // removeAttrs extra [ "meta" ];
    in
    self;

  # A package that nixpkgs refuses to evaluate without allowUnfree, as
  # nixpkgs' check-meta does (it throws when the derivation is used).
  unfree = name:
    if allowUnfree then drv name { meta.license = { free = false; shortName = "unfree"; }; }
    else
      let refusal = throw "Package ‘${name}’ has an unfree license (‘unfree’), refusing to evaluate.";
      in { type = "derivation"; inherit name; pname = name; meta.license = { free = false; }; outPath = refusal; drvPath = refusal; outputName = "out"; };

  textFile = { name, text, destination ? "", executable ? false, ... }:
    drv name { inherit text destination executable; };

  # The value types of `pkgs.formats.*` (a JSON-like value), written for the
  # stand-in: anything JSON can hold, and paths.
  jsonValue = with lib.types;
    let valueType = nullOr (oneOf [ bool int float str lib.types.path (attrsOf valueType) (listOf valueType) ]) // {
      description = "JSON value";
    };
    in valueType;
  format = ext: _args: {
    type = jsonValue;
    generate = name: value: drv name { text = builtins.toJSON value; };
    lib.types = { atom = jsonValue; };
  };

  pkgs = {
    inherit lib path;
    config = { inherit allowUnfree; };
    stdenv = {
      hostPlatform = { system = "x86_64-linux"; isLinux = true; isDarwin = false; isx86_64 = true; isAarch64 = false; };
      buildPlatform = pkgs.stdenv.hostPlatform;
      targetPlatform = pkgs.stdenv.hostPlatform;
      isLinux = true;
      isDarwin = false;
      shell = "${pkgs.bash}/bin/bash";
      cc = drv "gcc" { };
      mkDerivation = args: drv (args.name or "${args.pname}-${args.version or "0"}") { };
    };
    stdenvNoCC = pkgs.stdenv;
    buildPackages = pkgs;
    pkgsBuildHost = pkgs;
    runtimeShell = "${pkgs.bash}/bin/bash";

    # Builders.
    runCommand = name: _env: script: drv name { inherit script; };
    runCommandLocal = pkgs.runCommand;
    runCommandNoCC = pkgs.runCommand;
    writeText = name: text: textFile { inherit name text; };
    writeTextFile = textFile;
    writeTextDir = p: text: textFile { name = baseNameOf p; inherit text; destination = "/${p}"; };
    writeScript = name: text: textFile { inherit name text; executable = true; };
    writeScriptBin = name: text: textFile { inherit name text; executable = true; destination = "/bin/${name}"; };
    writeShellScript = name: text: textFile { inherit name; text = "#!${pkgs.runtimeShell}\n${text}"; executable = true; };
    writeShellScriptBin = name: text: textFile { inherit name; text = "#!${pkgs.runtimeShell}\n${text}"; executable = true; destination = "/bin/${name}"; };
    writeShellApplication = { name, text, ... }: pkgs.writeShellScriptBin name text;
    symlinkJoin = { name, paths ? [ ], ... }: drv name { inherit paths; };
    buildEnv = { name, paths ? [ ], ... }: drv name { inherit paths; };
    linkFarm = name: entries: drv name { inherit entries; };
    linkFarmFromDrvs = name: drvs: drv name { inherit drvs; };
    emptyDirectory = drv "empty-directory" { };
    mkShell = args: drv "nix-shell" { inherit (args) packages inputsFrom; };
    callPackage = fn: args:
      let f = if builtins.isFunction fn then fn else import fn;
      in f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
    formats = { json = format "json"; yaml = format "yaml"; toml = format "toml"; ini = format "ini"; };
    substituteAll = args: drv (args.name or "substituted") { };
    replaceVars = src: _vars: drv (baseNameOf (toString src)) { };
    makeWrapper = drv "make-wrapper-hook" { };
    rustPlatform.buildRustPackage = args: drv "${args.pname}-${args.version}" { inherit (args) pname version; meta = args.meta or { }; };
    testers.runNixOSTest = test: drv "vm-test-run-${test.name or "test"}" { };
    dockerTools.buildLayeredImage = args: drv "${args.name}.tar.gz" { inherit (args) config; contents = args.contents or [ ]; imageTag = args.tag or "latest"; };

    # Packages.
    claude-code = unfree "claude-code";
    # Deprecated in nixpkgs (a warning, later an error): modules must not use it.
  } // lib.optionalAttrs unstable {
    unstable = pkgs // { claude-code = unfree "claude-code-unstable"; };
  } // {
    system = throw "pkgs.system is deprecated in nixpkgs: use pkgs.stdenv.hostPlatform.system";
  } // lib.genAttrs [
    "acl"
    "age"
    "bash"
    "bash-completion"
    "bashInteractive"
    "btrfs-progs"
    "cargo"
    "clippy"
    "coreutils"
    "curl"
    "direnv"
    "fd"
    "findutils"
    "fzf"
    "gettext"
    "git"
    "gnugrep"
    "gnupg"
    "gnused"
    "gnutar"
    "jq"
    "kmod"
    "libnotify"
    "nix"
    "nix-direnv"
    "openssh"
    "pkg-config"
    "ripgrep"
    "rust-analyzer"
    "rustc"
    "rustfmt"
    "shadow"
    "sops"
    "sudo"
    "sops-install-secrets"
    "sudo-rs"
    "systemd"
    "tmux"
    "tree"
    "util-linux"
    "zenity"
    "glibcLocales"
    "man"
    "qt6Packages"
    "shared-mime-info"
  ]
    (name: drv name { pname = name; } // lib.optionalAttrs (name == "bash" || name == "bashInteractive") { shellPath = "/bin/bash"; });
in
pkgs
