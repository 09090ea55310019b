# The town's Matrix rooms (docs/chat.md#rooms), kept as declared by the
# hall's Matrix account.
{ config, lib, pkgs, options, ... }@args:

let
  c = import ./common.nix args;
  inherit (c) cfg;
  password = cfg.hall.matrix.passwordFile;
in
{
  config = lib.mkIf (cfg.enable && cfg.rooms != { }) {
    assertions = [{
      # The rooms keeper gets the hall's password from systemd (LoadCredential).
      assertion = password != null && lib.hasPrefix "/" password && builtins.match ".*[[:space:]].*" password == null;
      message = "nuketown.hall.matrix.passwordFile: the hall's Matrix account keeps the declared rooms (nuketown.rooms); set the file holding its password, an absolute path without spaces (systemd hands it to the rooms keeper), e.g. \"/run/secrets/hall-matrix\".";
    }];

    # Not as root: a user of its own (DynamicUser) that gets the account's
    # password as a credential systemd reads for it.
    systemd.services.nuketown-rooms = {
      description = "Nuketown: the town's Matrix rooms, kept as declared";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      restartTriggers = [ c.townJson ];
      serviceConfig = {
        ExecStart = "${c.nuketown} rooms --watch --town /etc/nuketown/town.json --store /var/lib/nuketown-rooms --password-file %d/hall-matrix";
        DynamicUser = true;
        LoadCredential = [ "hall-matrix:${toString password}" ];
        StateDirectory = "nuketown-rooms";
        StateDirectoryMode = "0700";
        Restart = "always";
        RestartSec = 10;
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        CapabilityBoundingSet = "";
      };
    };
  };
}
