# Credentials the gateway could not keep from the agent, or could not use:
# refused, each naming the option and the fix.
{
  module = {
    sops.defaultSopsFile = ../secrets.yaml;
    sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    nuketown = {
      enable = true;
      hall.gateway.user = "vox";
      agents.ada = {
        uid = 1100;
        # ada reads ada/gh: the same sops secret cannot be the gateway's.
        secrets.extraSecrets.gh = { path = ".config/gh/hosts.yml"; };
        credentials.github = { api = "github"; source = "ada/gh"; };
        # An `http` credential needs hosts and a header, which an extra secret cannot say.
        secrets.extraSecrets.search = { gateway = "http"; };
        credentials.both = { api = "anthropic"; source = "/etc/keys/a"; systemdCredential = "a"; };
      };
      agents.vox.uid = 1101;
    };
  };
}
