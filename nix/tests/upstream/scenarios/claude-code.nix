# Claude Code on, with nixpkgs' (unfree) claude-code allowed.
{
  allowUnfree = true;
  module = {
    nuketown = {
      enable = true;
      agents.ada = {
        uid = 1100;
        claudeCode = {
          enable = true;
          settings.permissions.allow = [ "Bash(cargo test:*)" ];
          extraAgents.reviewer = "Review the diff.";
        };
      };
    };
  };
}
