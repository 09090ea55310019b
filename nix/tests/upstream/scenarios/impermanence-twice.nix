# What does not work, and docs/nixos.md says so: nixosModules.default beside
# impermanence's flake module, which is a bare function and so cannot be
# recognised as the same module (use nixosModules.nuketown there).
{
  imports = { self, inputs }: [
    self.nixosModules.default
    inputs.impermanence.nixosModules.impermanence
  ];
  module = { nuketown = { enable = true; agents.ada.uid = 1100; }; };
}
