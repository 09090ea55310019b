# A town written as a reader of the module guide writes it: the quick start
# (a bare-UUID btrfs device, sops secret names, persist as a list), sudo
# commands, the approval daemon in the human's home-manager, the cloud
# spec's per-agent scaling in seconds. guide-forms-long.nix is the same town
# in the schema's long forms: the two must give the same town.json.
{
  allowUnfree = true;
  unstable = true;
  module = {
    imports = [ ./lib/forge.nix ];
    nuketown.btrfsDevice = "5c2b8f1e-3a47-4d09-9e61-7f0a2c4b6d18";
    nuketown.agents.ada = {
      persist = [ "projects" ".config/claude" ];
      secrets.sshKey = "ada/ssh-key";
      secrets.gpgKey = "ada/gpg-key";
      secrets.extraSecrets.forge = "ada/forge-token";
      sudo.commands = [ "systemctl" "dmesg --follow" ];
    };
    nuketown.agents.rio.cloud.scaling = { maxResources = "large"; idleTimeout = 3600; };
    home-manager.users.josh.nuketown.approvalDaemon.enable = true;
  };
}
