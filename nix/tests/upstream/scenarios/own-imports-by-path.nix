# nixosModules.default (which brings home-manager, sops-nix and impermanence)
# in a configuration that also imports them by path from the same inputs
# (`follows`): each is imported once.
{
  imports = { self, inputs }: [
    self.nixosModules.default
    inputs.home-manager.nixosModules.home-manager
    "${inputs.impermanence}/nixos.nix"
    "${inputs.sops-nix}/modules/sops"
  ];
  module = {
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; persist.directories = [ "dev" ]; };
    };
  };
}
