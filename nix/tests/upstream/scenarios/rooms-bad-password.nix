# Declared rooms whose keeper cannot be handed the hall's password: a
# relative path with a space (systemd's LoadCredential takes one absolute path).
{
  module = {
    nuketown = {
      enable = true;
      humanUser = "josh";
      hall.matrix = {
        homeserver = "https://matrix.example.org";
        userId = "@hall:example.org";
        passwordFile = "secrets/hall matrix";
      };
      rooms.team.humans = [ "@josh:example.org" ];
      agents.ada.uid = 1100;
    };
  };
}
