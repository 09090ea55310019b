# Claude Code from the configuration's `unstable` package set when it has
# one (the module guide's default), allowed as unfree.
{
  allowUnfree = true;
  unstable = true;
  module.nuketown = {
    enable = true;
    agents.ada = { uid = 1100; claudeCode.enable = true; };
  };
}
