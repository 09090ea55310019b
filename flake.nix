{
  description = "Nuketown: AI agents as real Unix users on real machines";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    home-manager = { url = "github:nix-community/home-manager"; inputs.nixpkgs.follows = "nixpkgs"; };
    sops-nix = { url = "github:Mic92/sops-nix"; inputs.nixpkgs.follows = "nixpkgs"; };
    impermanence.url = "github:nix-community/impermanence";
    # Builds each cloud agent's image (buildImage, resolvedByNix).
    nix-snapshotter = { url = "github:pdtpartners/nix-snapshotter"; inputs.nixpkgs.follows = "nixpkgs"; };
  };

  outputs = { self, nixpkgs, home-manager, sops-nix, impermanence, nix-snapshotter }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # nix-snapshotter's package (with buildImage) for these pkgs, from its overlay.
      snapshotter = pkgs: (nix-snapshotter.overlays.default pkgs pkgs).nix-snapshotter;
    in
    {
      # The module alone: for configurations that import home-manager (needed)
      # and, if wanted, sops-nix and impermanence themselves.
      nixosModules.nuketown = { pkgs, lib, ... }: {
        imports = [ ./nix/modules/nixos.nix ];
        nuketown.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        # Each cloud agent's image, and its reference in agents.<name>.cloud.image.
        nuketown.buildImage = lib.mkDefault (snapshotter pkgs).buildImage;
      };
      # The module with home-manager, sops-nix and impermanence. Each is
      # imported by path, so a configuration that also imports one of them by
      # the same path (its input made to `follows` ours) gets it once.
      nixosModules.default = {
        imports = [
          self.nixosModules.nuketown
          "${home-manager}/nixos"
          "${sops-nix}/modules/sops"
          "${impermanence}/nixos.nix"
        ];
      };

      homeManagerModules.nuketown = { pkgs, lib, ... }: {
        imports = [ ./nix/modules/home-manager.nix ];
        services.nuketown-approver.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      homeManagerModules.default = self.homeManagerModules.nuketown;

      packages = forAll (pkgs: rec {
        nuketown = pkgs.callPackage ./nix/packages/nuketown.nix { };
        default = nuketown;
        # The scaling operator's image (deploy/operator/operator.yaml), for
        # any cluster: `nix build .#operator-image`, then `docker load <
        # result` or `skopeo copy docker-archive:result docker://…`. Only
        # the operator's binary and what it links: not the CLI's tools.
        operator-image = pkgs.dockerTools.buildLayeredImage {
          name = "nuketown-operator";
          tag = nuketown.version;
          contents = [
            (pkgs.runCommand "nuketown-operator-${nuketown.version}" { } ''
              install -Dm755 ${nuketown}/bin/nuketown-operator $out/bin/nuketown-operator
            '')
          ];
          config = {
            Entrypoint = [ "/bin/nuketown-operator" ];
            User = "65534:65534";
          };
        };
      });

      apps = forAll (pkgs: {
        default = { type = "app"; program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nuketown"; };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer acl tmux btrfs-progs fzf ];
        };
      });

      # The town of a NixOS configuration, as Kubernetes manifests (nuketown cloud render).
      lib.toKubeManifests = { pkgs, town }: import ./nix/lib/cloud.nix {
        inherit pkgs town;
        nuketown = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      lib.toTown = import ./nix/lib/town.nix;
      # Each cloud agent's image (nix-snapshotter), by agent name: the same
      # images as a NixOS configuration's config.nuketown.cloudImages.
      lib.agentImages = { pkgs, town }: import ./nix/lib/images.nix {
        inherit pkgs town;
        inherit (snapshotter pkgs) buildImage;
      };

      checks = forAll (pkgs: import ./nix/checks.nix {
        inherit pkgs self home-manager sops-nix impermanence;
      });
    };
}
