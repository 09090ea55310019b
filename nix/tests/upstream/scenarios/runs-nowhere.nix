# host.enable = false without cloud.enable: the agent would run nowhere;
# and a cloud-only agent with a chat bridge (which runs in its pod, as the
# pod's command) and a command of its own.
{
  module = {
    nuketown = {
      enable = true;
      agents.ada = { uid = 1100; host.enable = false; };
      agents.vox = {
        uid = 1101;
        cloud = { enable = true; image = "busybox"; command = [ "sleep" "infinity" ]; };
        chat = {
          enable = true;
          homeserver = "https://matrix.example.org";
          userId = "@vox:example.org";
          passwordFile = "/run/secrets/vox/matrix";
        };
      };
    };
  };
}
