# The design's laptop (scenarios/lib/laptop.nix) with systemd in stage 1.
{
  module = {
    imports = [ ./lib/laptop.nix ];
    boot.initrd.systemd.enable = true;
  };
}
