# Claude Code on, where nixpkgs refuses unfree packages: an assertion says
# what to do, before anything tries to use the package.
{
  allowUnfree = false;
  module = {
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; claudeCode.enable = true; };
    };
  };
}
