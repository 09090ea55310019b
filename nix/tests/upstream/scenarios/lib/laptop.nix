# The design's laptop: btrfs homes rolled back at boot, impermanence for the
# persisted paths, sops-nix for keys and tokens, home-manager, devices, sudo.
# The scenarios laptop-systemd-stage1 and laptop-scripted-stage1 differ only
# in the initrd.
{ config, ... }:
{
  # The machine's own sops and persistence set-up, as a user would write it.
  sops.defaultSopsFile = ../../secrets.yaml;
  sops.age.keyFile = "/var/lib/sops-nix/key.txt";
  fileSystems."/persist" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=persist" ]; neededForBoot = true; };

  nuketown = {
    enable = true;
    humanUser = "josh";
    btrfsDevice = "/dev/disk/by-label/nixos";
    agents.ada = {
      uid = 1100;
      persist.directories = [ "dev" ".local/share/direnv" ];
      persist.files = [ ".bash_history" ];
      secrets.sshKey = "ada/ssh-key";
      secrets.extraSecrets.gh.path = ".config/gh/hosts.yml";
      devices = [{ subsystem = "tty"; attrs = { idVendor = "0483"; idProduct = "374b"; }; }];
      sudo.enable = true;
      rebuild.enable = true;
    };
    agents.vox = {
      uid = 1101;
      role = "research";
      persist.directories = [ "notes" ];
      secrets.gpgKey = "vox/gpg-key";
      devices = [{ subsystem = "usb"; attrs = { idVendor = "1209"; idProduct = "5bf0"; }; permission = "r"; }];
    };
  };
}
