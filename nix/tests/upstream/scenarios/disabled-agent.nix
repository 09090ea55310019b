# vox is declared but switched off: nothing of vox reaches the machine,
# town.json still lists vox (enable = false).
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
        enable = false;
        uid = 1101;
        persist.directories = [ "notes" ];
        persist.files = [ ".bash_history" ];
        secrets.extraSecrets.gh.path = ".config/gh/hosts.yml";
        devices = [{ subsystem = "usb"; attrs = { idVendor = "1209"; idProduct = "5bf0"; }; }];
        sudo.enable = true;
        claudeCode.enable = true;
        chat = {
          enable = true;
          homeserver = "https://matrix.example.org";
          userId = "@vox:example.org";
          passwordFile = "/run/secrets/vox/matrix";
        };
      };
    };
  };
}
