# Two agents each with an extra secret named gh: two sops secrets
# (ada/gh, vox/gh), each the agent's own.
{
  module = {
    sops.defaultSopsFile = ../secrets.yaml;
    sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; secrets.extraSecrets.gh = { path = ".config/gh/hosts.yml"; }; };
      agents.vox = { uid = 1101; secrets.extraSecrets.gh = { path = ".config/gh/hosts.yml"; mode = "0440"; }; };
    };
  };
}
