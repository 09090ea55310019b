# The human's side of Nuketown: the desktop approver, a user service that
# shows each escalation request of the town hall as a dialog.
# `nuketown.approvalDaemon.enable` (the module guide's name) is
# `services.nuketown-approver.enable`. The NixOS module adds this module to
# every home-manager user; outside NixOS import `homeManagerModules.default`.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nuketown-approver;
in
{
  imports = [
    (lib.mkAliasOptionModule [ "nuketown" "approvalDaemon" "enable" ] [ "services" "nuketown-approver" "enable" ])
  ];

  options.services.nuketown-approver = {
    enable = lib.mkEnableOption "the Nuketown desktop approver (dialogs for agents' sudo requests)";
    package = lib.mkOption {
      type = lib.types.package;
      description = "The nuketown package.";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.user.services.nuketown-approver = {
      Unit = {
        Description = "Nuketown desktop approver";
        PartOf = [ "graphical-session.target" ];
        After = [ "graphical-session.target" ];
      };
      Service = {
        ExecStart = "${cfg.package}/bin/nuketown approvals desktop";
        Environment = [ "PATH=${lib.makeBinPath [ pkgs.zenity pkgs.libnotify ]}" ];
        Restart = "on-failure";
        RestartSec = 2;
      };
      Install.WantedBy = [ "graphical-session.target" ];
    };
  };
}
