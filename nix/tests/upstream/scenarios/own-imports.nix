# A configuration that imports home-manager, sops-nix and impermanence
# itself, as their flakes export them, beside the module alone
# (nixosModules.nuketown).
{
  imports = { self, inputs }: [
    self.nixosModules.nuketown
    inputs.home-manager.nixosModules.home-manager
    inputs.sops-nix.nixosModules.sops
    inputs.impermanence.nixosModules.impermanence
  ];
  module = {
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; persist.directories = [ "dev" ]; };
    };
  };
}
