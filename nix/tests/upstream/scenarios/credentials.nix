# Credentials through the town's gateway (#24) on the design's laptop
# (scenarios/lib/laptop.nix: impermanence, sops-nix): ada's Anthropic key
# switched over from an extra secret (`gateway = "anthropic"`), a GitHub
# token from a sops secret and an HTTP API key handed to the hall as a
# systemd credential; vox's own Anthropic key through another upstream,
# with limits. ada's gh token stays an ordinary extra secret, ada's own.
{
  module = {
    imports = [ ./lib/laptop.nix ];
    boot.initrd.systemd.enable = true;
    nuketown.agents.ada = {
      secrets.extraSecrets.anthropic = { path = ".config/anthropic/key"; gateway = "anthropic"; };
      credentials.github = { api = "github"; source = "ada/gh-token"; paths = [ "/repos/forge/" ]; };
      credentials.search = {
        api = "http";
        systemdCredential = "ada-search";
        hosts = [ "api.search.example:8443" ];
        header = "X-Api-Key";
        scheme = "";
      };
    };
    nuketown.agents.vox.credentials.claude = {
      api = "anthropic";
      source = "vox/anthropic-key";
      upstream = "https://llm.example.org";
      models = [ "claude-sonnet-*" ];
      limits = { requestsPerHour = 200; tokensPerDay = 2000000; };
      onLimit = "ask";
      upstreamCa = "/etc/ssl/forge-ca.pem";
    };
    systemd.services.nuketown-hall.serviceConfig.LoadCredential = [ "ada-search:/etc/nuketown/search-key" ];
  };
}
