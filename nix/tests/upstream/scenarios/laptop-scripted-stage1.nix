# The design's laptop (scenarios/lib/laptop.nix) with the scripted stage 1,
# and users made by systemd-sysusers, which makes sops-nix install secrets
# from a unit (sops-install-secrets.service) instead of the activation script.
{
  module = {
    imports = [ ./lib/laptop.nix ];
    boot.initrd.systemd.enable = false;
    systemd.sysusers.enable = true;
    users.mutableUsers = false;
  };
}
