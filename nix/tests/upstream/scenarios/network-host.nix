# A host name in an egress rule: NixOS builds its rules without DNS, so it
# is refused with the fix.
{
  module = {
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; network.egress = [ { host = "github.com"; ports = [ 443 ]; } ]; };
    };
  };
}
