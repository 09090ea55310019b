# Keys and secrets named neither as a sops secret nor as a file, or kept in
# the Nix store: refused, with the fix (a sops secret's name, or the
# absolute path of a file outside the store).
{
  module = {
    sops.defaultSopsFile = ../secrets.yaml;
    sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    nuketown = {
      enable = true;
      agents.ada = {
        uid = 1100;
        secrets.sshKey = "ada/../ssh-key";
        secrets.gpgKey = "/nix/store/00000000000000000000000000000000-key.asc";
        secrets.extraSecrets.gh = { path = ".config/gh/hosts.yml"; source = "gh token"; };
      };
    };
  };
}
