# An agent with sudo.enable on a machine with neither sudo nor sudo-rs:
# refused with the fix, not a silently missing rule.
{
  module = {
    security.sudo.enable = false;
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; sudo.enable = true; };
    };
  };
}
