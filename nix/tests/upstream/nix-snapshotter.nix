# A stand-in for the nix-snapshotter flake input, which cannot be fetched
# here: its overlay's `nix-snapshotter.buildImage` returns an inert image
# derivation (pkgs.nix's runCommand) with the reference the real one gives
# with resolvedByNix, `nix:0` + its store path, and keeps its arguments
# (`buildImageArgs`) so a test can read what the module asked for. What the
# real buildImage makes of them (nix2container) is not evaluated here.
{
  overlays.default = self: _super: {
    nix-snapshotter = {
      buildImage = args@{ name, resolvedByNix ? false, tag ? "latest", ... }:
        let
          image = self.runCommand "nix-image-${baseNameOf name}.tar" { } "";
        in
        image // {
          image = if resolvedByNix then "nix:0${image.outPath}" else "${self.lib.toLower name}:${tag}";
          buildImageArgs = args;
        };
    };
  };
  outPath = "/nix/store/00000000000000000000000000000000-nix-snapshotter-source";
}
