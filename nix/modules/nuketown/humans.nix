# The humans' side of the town: `portal-<agent>` and `portal` on their PATH,
# the desktop approver in their home-manager (`nuketown.approvalDaemon`),
# and git verifying the agents' signatures with the keys the town holds.
{ config, lib, pkgs, options, ... }@args:

let
  inherit (lib) mkIf mkMerge attrNames filterAttrs optionalAttrs;
  c = import ./common.nix args;
  inherit (c) cfg agents nuketown;

  portalAgents = attrNames (filterAttrs (_: a: a.portal.enable) agents);
  # `nuketown portal --pick`: fzf over the human's projectDirs when no
  # project is given, the agent on top and the human below in tmux.
  portal = name: args: pkgs.writeShellScriptBin name ''
    exec ${nuketown} portal --town /etc/nuketown/town.json --pick ${args}"$@"
  '';
in
{
  config = mkIf cfg.enable (mkMerge [
    {
      environment.systemPackages = lib.optionals (portalAgents != [ ])
        (map (name: portal "portal-${name}" "${lib.escapeShellArg name} ") portalAgents
          ++ [ (portal "portal" "") ]);

      # The allowed signers file is written at run time (the keys the town
      # holds are made there: `nuketown reset --all` at boot, `keys rotate`);
      # every user's git reads it through the system configuration. A
      # user's own gpg.ssh.allowedSignersFile wins.
      environment.etc.gitconfig.text = lib.mkAfter ''
        [include]
          path = /etc/nuketown/gitconfig
      '';
    }

    (optionalAttrs c.hasHomeManager {
      # In every home-manager user: `nuketown.approvalDaemon.enable` (the
      # module guide's name) and `services.nuketown-approver`, with this
      # package. An option default, so the flake's homeManagerModules
      # imported as well (mkDefault) win without a conflict.
      home-manager.sharedModules = [
        ../home-manager.nix
        ({ config, ... }: {
          services.nuketown-approver.package = lib.mkOptionDefault cfg.package;
          # A human who only turns the approver on still gets a home-manager
          # configuration that evaluates.
          home.stateVersion = mkIf config.services.nuketown-approver.enable (lib.mkDefault args.config.system.stateVersion);
        })
      ];
    })
  ]);
}
