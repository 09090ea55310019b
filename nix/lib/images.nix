# Each cloud agent's container image, built with nix-snapshotter's
# `buildImage` (resolvedByNix): its reference, `nix:0/nix/store/…-nix-image-
# nuketown-<agent>.tar`, is what the pod names, and nodes running
# nix-snapshotter resolve it from the Nix store and its binary cache — no
# registry. The NixOS module puts that reference into
# `agents.<name>.cloud.image`, so town.json, `lib.toTown` (the Argo CD
# plugin) and `lib.toKubeManifests` all render it.
#
#   pkgs        nixpkgs
#   buildImage  nix-snapshotter's buildImage (the flake passes its own)
#   town        a NixOS configuration's `config.nuketown`, whose packages are
#               packages (in a projected town they are only names, and are left out);
#               its `package` goes into the images whose pods run nuketown
#
# Returns { <agent> = image; } for every enabled agent with cloud.enable
# (evaluated lazily: an agent that declares an image of its own never builds
# this one); `image.image` is the reference.
{ pkgs, buildImage, town }:
let
  inherit (pkgs) lib;
  agentsDir = town.agentsDir or "/agents";

  # What the pod needs whatever the agent does: /bin/sh and coreutils for the
  # lay-down (docs/cloud.md), git and ssh for the work, sops to decrypt its
  # secrets with secrets = "sops-kms".
  base = a: [ pkgs.bashInteractive pkgs.coreutils pkgs.git pkgs.openssh ]
    ++ lib.optional ((a.cloud.secrets or "secret") == "sops-kms") pkgs.sops
    # nuketown itself where the pod uses it: `nuketown ask resources` (and
    # `ask active`) with scaling.maxResources, and the chat bridge
    # (`nuketown-chat AGENT --pod`, the pod's command) with chat.enable.
    ++ lib.optional (lib.isDerivation (town.package or null) && usesNuketown a) town.package;
  usesNuketown = a: (a.chat.enable or false) || (a.cloud.scaling.maxResources or null) != null;
  packages = a: builtins.filter lib.isDerivation ((town.basePackages or [ ]) ++ (a.packages or [ ]))
    ++ lib.optional ((a.claudeCode.enable or false) && (a.claudeCode.package or null) != null) a.claudeCode.package;

  wanted = name: a: (a.enable or true) && (a.cloud.enable or false);

  image = name: a: buildImage {
    name = "nuketown-${name}";
    resolvedByNix = true;
    copyToRoot = pkgs.buildEnv {
      name = "nuketown-${name}-root";
      paths = base a ++ packages a;
      pathsToLink = [ "/bin" "/etc" "/share" ];
    };
    # The pod sets the user, home and command (docs/cloud.md); these are the
    # image's own defaults, the same values.
    config = {
      User = "${toString a.uid}:${toString a.uid}";
      WorkingDir = "${agentsDir}/${name}";
      Env = [ "PATH=/bin" "HOME=${agentsDir}/${name}" "USER=${name}" ];
      Cmd = [ "/bin/bash" "-l" ];
    };
  };
in
lib.mapAttrs image (lib.filterAttrs wanted (town.agents or { }))
