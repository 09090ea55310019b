# Shared directories the module must refuse, each with its fix.
{
  module = {
    nuketown = {
      enable = true;
      agents.ada.uid = 1100;
      sharedDirs.inside = { path = "/agents/ada/notes"; members.ada = "rw"; };
      sharedDirs.stranger.members.mallory = "ro";
      sharedDirs.empty = { };
    };
  };
}
