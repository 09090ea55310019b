# impermanence keeps persisted paths at persistDir + home; with homes outside
# /agents that is not where nuketown binds them from: refused with the reason.
{
  module = {
    nuketown = {
      enable = true;
      agentsDir = "/home/agents";
      agents.ada = { uid = 1100; persist.directories = [ "dev" ]; };
    };
  };
}
