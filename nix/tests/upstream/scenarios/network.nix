# Agents whose egress is restricted: nftables rules matched on their uids.
{
  module = {
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; network.egress = "none"; };
      agents.vox = {
        uid = 1101;
        network.egress = [
          { cidr = "0.0.0.0/0"; ports = [ 443 ]; }
          { cidr = "2001:db8::/32"; }
        ];
      };
      agents.kit = { uid = 1102; };
    };
  };
}
