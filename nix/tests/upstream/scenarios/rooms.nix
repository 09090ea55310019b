# A declared room kept by the hall's Matrix account: the rooms service and
# the room in town.json.
{
  module = {
    nuketown = {
      enable = true;
      humanUser = "josh";
      hall.matrix = {
        homeserver = "https://matrix.example.org";
        userId = "@hall:example.org";
        passwordFile = "/run/secrets/hall/matrix";
      };
      rooms.team = {
        topic = "ada and vox";
        humans = [ "@josh:example.org" ];
        agents = [ "ada" "vox" ];
        agentsAnswerAgents = true;
      };
      agents.ada = {
        uid = 1100;
        chat = {
          enable = true;
          homeserver = "https://matrix.example.org";
          userId = "@ada:example.org";
          passwordFile = "/run/secrets/ada/matrix";
          allowedHumans = [ "@josh:example.org" ];
        };
      };
      agents.vox = {
        uid = 1101;
        chat = {
          enable = true;
          homeserver = "https://matrix.example.org";
          userId = "@vox:example.org";
          passwordFile = "/run/secrets/vox/matrix";
          allowedHumans = [ "@josh:example.org" ];
        };
      };
    };
  };
}
