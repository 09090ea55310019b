# Where agents run: ada on the machine only, vox in the cluster only
# (cloud.enable, host.enable left to its default), bo on both. Nothing of vox
# reaches the machine; town.json lists all three for the cluster render.
{
  module = { config, ... }: {
    sops.defaultSopsFile = ../secrets.yaml;
    sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    nuketown = {
      enable = true;
      humanUser = "josh";
      btrfsDevice = "/dev/disk/by-label/nixos";
      agents.ada = { uid = 1100; persist.directories = [ "dev" ]; };
      agents.vox = {
        uid = 1101;
        persist.directories = [ "notes" ];
        persist.files = [ ".bash_history" ];
        secrets.extraSecrets.gh.path = ".config/gh/hosts.yml";
        devices = [{ subsystem = "usb"; attrs = { idVendor = "1209"; idProduct = "5bf0"; }; }];
        sudo.enable = true;
        network.egress = "none";
        claudeCode.enable = true;
        cloud = { enable = true; image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-agent-vox.tar"; };
      };
      agents.bo = {
        uid = 1102;
        host.enable = true;
        sudo.enable = true;
        persist.directories = [ "work" ];
        cloud = { enable = true; image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-agent-bo.tar"; };
      };
    };
  };
}
