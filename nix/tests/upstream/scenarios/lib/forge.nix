# The machine under the two spellings of one town (guide-forms.nix,
# guide-forms-long.nix): its sops set-up, and everything of the town that
# both spell alike.
{ pkgs, ... }:
{
  sops.age.keyFile = "/var/lib/sops-nix/key.txt";
  nuketown = {
    enable = true;
    domain = "forge.local";
    sopsFile = ../../secrets.yaml;
    humanUser = "josh";
    agents.ada = {
      enable = true;
      uid = 1100;
      role = "firmware";
      description = ''
        Writes flight-controller firmware in C; flashes boards on the bench.
      '';
      packages = [ pkgs.unstable.claude-code pkgs.tmux ];
      sudo.enable = true;
      portal.enable = true;
      # The public half of ada/ssh-key, for the machines ada reaches.
      keys.publicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlHYbUiPeSlOrLHQaxnsDZrshvi1pHJv89LXFa4/04X ada";
      devices = [
        { subsystem = "tty"; attrs = { idVendor = "2e8a"; idProduct = "000a"; }; }
        { subsystem = "usb"; attrs = { product = "RP2 Boot"; }; }
      ];
      claudeCode = {
        enable = true;
        settings.permissions.defaultMode = "acceptEdits";
        extraPrompt = "Run the bench tests before you push.";
      };
    };
    agents.rio = {
      enable = true;
      uid = 1101;
      role = "ops";
      host.enable = true;
      cloud.enable = true;
      cloud.image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-agent-rio.tar";
    };
  };
}
