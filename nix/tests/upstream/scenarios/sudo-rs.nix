# A machine that uses sudo-rs instead of sudo.
{
  module = {
    security.sudo-rs.enable = true;
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; sudo.enable = true; };
      agents.vox = { uid = 1101; };
    };
  };
}
