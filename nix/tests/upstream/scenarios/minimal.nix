# The smallest town: one agent, no extras.
{
  module = {
    nuketown = {
      enable = true;
      agents.ada.uid = 1100;
    };
  };
}
