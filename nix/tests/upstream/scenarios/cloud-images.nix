# The flake builds each cloud agent's image with nix-snapshotter and the
# module puts its `nix:0/nix/store/…` reference into cloud.image: ada (cloud
# only, with packages, Claude Code, secrets = "sops-kms" and a bigger tier
# to ask for, so nuketown too) gets one; vox
# declares an image of its own and keeps it.
{
  allowUnfree = true;
  module = { pkgs, ... }: {
    sops.defaultSopsFile = ../secrets.yaml;
    sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    nuketown = {
      enable = true;
      domain = "agents.example.org";
      sopsFile = ../secrets.yaml;
      basePackages = [ pkgs.jq ];
      agents.ada = {
        uid = 1100;
        packages = [ pkgs.ripgrep ];
        claudeCode.enable = true;
        secrets.extraSecrets.gh.path = ".config/gh/hosts.yml";
        cloud = {
          enable = true;
          resources = "small";
          secrets = "sops-kms";
          identity.gcpServiceAccount = "ada@my-project.iam.gserviceaccount.com";
          scaling.maxResources = "large";
        };
      };
      agents.vox = {
        uid = 1101;
        cloud = { enable = true; image = "busybox:1.36"; };
      };
    };
  };
}
