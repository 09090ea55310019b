# Keys named as sops keys or kept in the Nix store: refused, with the fix
# (secrets.sshKey/gpgKey and extraSecrets.<n>.source are paths on every host).
{
  module = {
    nuketown = {
      enable = true;
      agents.ada = {
        uid = 1100;
        secrets.sshKey = "ada/ssh-key";
        secrets.gpgKey = "/nix/store/00000000000000000000000000000000-key.asc";
        secrets.extraSecrets.gh = { path = ".config/gh/hosts.yml"; source = "gh-token"; };
      };
    };
  };
}
