# Claude Code's configuration without nixpkgs' package (installed another way).
{
  allowUnfree = false;
  module = {
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; claudeCode = { enable = true; package = null; settings.model = "opus"; }; };
    };
  };
}
