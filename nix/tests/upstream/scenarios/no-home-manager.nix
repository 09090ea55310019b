# The module alone, without home-manager: refused with the fix.
{
  imports = { self, ... }: [ self.nixosModules.nuketown ];
  module = { nuketown = { enable = true; agents.ada.uid = 1100; }; };
}
