# The town as a whole: /etc/nuketown/town.json (which every nuketown binary
# reads), the package on every PATH, the checks that span agents, and the
# shared directories.
{ config, lib, pkgs, options, ... }@args:

let
  inherit (lib) mkIf mapAttrs' nameValuePair attrNames attrValues concatMap concatStringsSep unique;
  c = import ./common.nix args;
  inherit (c) cfg agents sudoAgents approvers humans;

  sharedPath = name: d: if d.path != null then d.path else "${cfg.persistDir}/shared/${name}";
  # systemd-tmpfiles: root's directory, setgid to its group, the members'
  # entries as its access and default ACL (`a` replaces the ACL, so a member
  # taken out loses access at the next switch or boot).
  sharedTmpfiles = name: d:
    let
      path = sharedPath name d;
      entries = [ "u::rwx" "g::---" "m::rwx" "o::---" ]
        ++ lib.mapAttrsToList (who: access: "u:${who}:${if access == "rw" then "rwx" else "r-x"}") d.members;
      acl = concatStringsSep "," (entries ++ map (e: "d:${e}") entries);
    in [
      "d ${path} 2770 root shared-${name} -"
      "a ${path} - - - - ${acl}"
    ];
  uids = map (a: a.uid) (attrValues agents);
in
{
  config = mkIf cfg.enable {
    assertions = [
      { assertion = c.hasHomeManager; message = "nuketown needs home-manager's NixOS module (it lays down the agents' homes): import nuketown.nixosModules.default, or home-manager.nixosModules.home-manager beside nuketown.nixosModules.nuketown."; }
      { assertion = builtins.length uids == builtins.length (unique uids); message = "nuketown.agents: two agents share a uid; give each agent its own uid (1100, 1101, …)."; }
      { assertion = sudoAgents == { } || approvers != [ ]; message = "nuketown: an agent has sudo.enable but nobody can approve; set nuketown.humanUser."; }
      { assertion = !(lib.hasPrefix cfg.agentsDir cfg.persistDir) && !(lib.hasPrefix cfg.persistDir cfg.agentsDir); message = "nuketown.persistDir and nuketown.agentsDir must not contain each other: a round levels agentsDir."; }
      { assertion = cfg.humanUser == null || !(agents ? ${cfg.humanUser}); message = "nuketown.humanUser must not also be an agent."; }
    ] ++ concatMap (name: let a = cfg.agents.${name}; key = "nuketown.agents.${name}"; in [
      { assertion = !(a.enable && !a.host.enable && !(a.cloud.enable or false)); message = "${key}.host.enable is false and cloud.enable is not set: the agent would run nowhere; set cloud.enable = true to run it in the cluster only, or enable = false to remove it."; }
      # A cloud-only agent's bridge runs in its pod, as the pod's command.
      { assertion = !(a.enable && !a.host.enable && (a.chat.enable or false) && (a.cloud.command or [ ]) != [ ]); message = "${key}.cloud.command: a cloud-only agent with chat.enable runs its chat bridge as the pod's command (the bridge starts the backend for each message); remove cloud.command, or turn chat off to run your own command."; }
    ]) (attrNames cfg.agents)
    ++ concatMap (name:
      let d = cfg.sharedDirs.${name}; path = sharedPath name d; key = "nuketown.sharedDirs.${name}"; in
      [
        { assertion = d.members != { }; message = "${key}.members is empty; name who shares it, e.g. { ada = \"rw\"; vox = \"ro\"; }."; }
        { assertion = lib.hasPrefix "/" path && !(lib.hasInfix ".." path); message = "${key}.path: \"${path}\" must be an absolute path without '..', e.g. \"/srv/shared/${name}\"."; }
        { assertion = !(lib.hasPrefix "${cfg.agentsDir}/" path) && !(lib.hasPrefix "${cfg.persistDir}/agents/" path); message = "${key}.path: \"${path}\" is inside an agent's home or persist dir; put it outside, e.g. \"/srv/shared/${name}\"."; }
      ] ++ map (who: {
        assertion = agents ? ${who} || builtins.elem who humans;
        message = "${key}.members.${who}: \"${who}\" is neither an enabled agent of this machine (not declared for the cloud only) nor a human of the town (humanUser, hall.approvers).";
      }) (attrNames d.members))
      (attrNames cfg.sharedDirs);

    environment.etc."nuketown/town.json".source = c.townJson;
    environment.systemPackages = [ cfg.package ];

    users.groups = mapAttrs' (name: d: nameValuePair "shared-${name}" ({ members = attrNames d.members; } // lib.optionalAttrs (d.gid != null) { inherit (d) gid; })) cfg.sharedDirs;
    systemd.tmpfiles.rules = concatMap (name: sharedTmpfiles name cfg.sharedDirs.${name}) (attrNames cfg.sharedDirs);
  };
}
