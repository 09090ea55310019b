# guide-forms.nix in the schema's long forms.
{
  allowUnfree = true;
  unstable = true;
  module = {
    imports = [ ./lib/forge.nix ];
    sops.secrets."ada/ssh-key".sopsFile = ../secrets.yaml;
    sops.secrets."ada/gpg-key".sopsFile = ../secrets.yaml;
    nuketown.btrfsDevice = "/dev/disk/by-uuid/5c2b8f1e-3a47-4d09-9e61-7f0a2c4b6d18";
    nuketown.btrfsSubvolume = "@agents";
    nuketown.agents.ada = {
      persist = { directories = [ "projects" ".config/claude" ]; files = [ ]; };
      secrets.sshKey = "/run/secrets/ada/ssh-key";
      secrets.gpgKey = "/run/secrets/ada/gpg-key";
      secrets.extraSecrets.forge = { source = "ada/forge-token"; mode = "0400"; };
      sudo.commands = [
        { argv = [ "systemctl" ]; prefix = true; }
        { argv = [ "dmesg" "--follow" ]; }
      ];
    };
    nuketown.agents.rio.cloud.scaling = { maxResources = "large"; idleTimeout = "3600s"; };
    home-manager.users.josh.services.nuketown-approver.enable = true;
  };
}
