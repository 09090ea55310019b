# A machine that uses sudo-rs instead of sudo; one agent's name has a "-"
# (systemd escapes it in home-manager's unit name).
{
  module = {
    security.sudo-rs.enable = true;
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; sudo.enable = true; };
      agents.vox = { uid = 1101; };
      agents.ci-bot = { uid = 1102; sudo.enable = true; };
    };
  };
}
