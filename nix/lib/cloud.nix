# The town as Kubernetes manifests: `nuketown cloud render` run at build time
# on the town, so Nix users get the same multi-document YAML the Argo CD
# plugin produces (docs/cloud.md). The flake exposes it as lib.toKubeManifests.
#
#   town      the Town: a NixOS configuration's `config.nuketown`, or the
#             projection lib.toTown makes of it, or a hand-written attrset
#             with the schema's keys (docs/schema.md). It must set `domain`.
#   revision  optional; written on every object (nuketown.dev/town-revision),
#             e.g. self.rev.
#
# The result is a derivation whose output is the YAML file.
{ pkgs, nuketown, town, revision ? null }:
let
  toTown = import ./town.nix;
  # Projecting an already projected town changes nothing, so both the
  # options and lib.toTown's output are accepted.
  townJson = pkgs.writeText "town.json" (builtins.toJSON (toTown town));
  revisionArg = if revision == null then "" else "--revision ${pkgs.lib.escapeShellArg revision}";
in
pkgs.runCommand "nuketown-manifests.yaml" { nativeBuildInputs = [ nuketown ]; } ''
  nuketown cloud render ${townJson} ${revisionArg} > "$out"
''
