# The cloud spec's machine: `nuketown.cloud` on for the whole town, with
# defaults every agent takes (idleTimeout in seconds); one agent keeps a
# tier of its own, one stays on the machine.
{
  module = {
    nuketown = {
      enable = true;
      domain = "agents.example.org";
      cloud = {
        enable = true;
        resources = "small";
        scaling = { maxResources = "large"; idleTimeout = 3600; };
      };
      agents.ada = {
        uid = 1100;
        persist = [ "projects" ];
        cloud.image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-agent-ada.tar";
      };
      agents.kit = {
        uid = 1101;
        cloud = { resources = "large"; image = "nix:0/nix/store/00000000000000000000000000000000-nuketown-agent-kit.tar"; };
      };
      agents.bo = { uid = 1102; cloud.enable = false; };
    };
  };
}
