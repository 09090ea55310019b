# Agents whose egress is restricted: nftables rules matched on their uids,
# DNS only to the host's nameservers (or the agent's own `network.dns`).
{
  module = {
    networking.nameservers = [ "10.0.0.53" ];
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = { uid = 1100; network.egress = "none"; };
      agents.vox = {
        uid = 1101;
        network.dns = [ "192.0.2.53" "2001:db8::53" ];
        network.egress = [
          { cidr = "0.0.0.0/0"; ports = [ 443 ]; }
          { cidr = "2001:db8::/32"; }
        ];
      };
      agents.kit = { uid = 1102; };
    };
  };
}
