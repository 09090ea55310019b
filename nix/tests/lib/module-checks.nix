# What must hold of any NixOS configuration with nuketown enabled, read from
# the evaluated `config` only. Used twice: by `nix flake check`
# (nix/checks.nix, a real NixOS evaluation) and by the evaluation tests
# against the upstream modules (nix/tests/upstream), so the checks meet what
# real NixOS puts beside nuketown's values: root's and wheel's sudo rules,
# NixOS's own udev packages, other users and groups.
#
# Returns { <check> = { ok = bool; why = "what should hold"; }; }.
{ lib, config }:
let
  cfg = config.nuketown;
  # The agents that are users of the machine; the others (disabled, or
  # declared for the cloud only) must leave no trace on it.
  agents = lib.filterAttrs (_: a: a.enable && a.host.enable) cfg.agents;
  disabled = lib.attrNames (lib.filterAttrs (_: a: !(a.enable && a.host.enable)) cfg.agents);
  names = lib.attrNames agents;
  sudoNames = lib.attrNames (lib.filterAttrs (_: a: a.sudo.enable) agents);
  elevate = cfg.hall.elevatePath;
  approvers = if cfg.hall.approvers != [ ] then cfg.hall.approvers else lib.optional (cfg.humanUser != null) cfg.humanUser;
  hm = config.home-manager.users or { };

  # The sudo in use and every rule in it that names an agent.
  sudo = if config.security.sudo-rs.enable or false then config.security.sudo-rs else config.security.sudo;
  agentRules = lib.filter (r: lib.any (u: builtins.elem u names) r.users) sudo.extraRules;
  entryPointOnly = r:
    lib.sort lib.lessThan r.users == sudoNames
    && r.groups == [ ]
    && r.runAs == "root"
    && r.commands == [{ command = elevate; options = [ "NOPASSWD" ]; }];

  udevOurs = lib.filter (p: (p.name or "") == "nuketown-udev-rules") config.services.udev.packages;
  resetBefore = config.systemd.services.nuketown-reset.before or [ ];
  # home-manager names the unit after the user, systemd-escaped (a Unix
  # name's only character to escape is "-").
  hmUnit = name: "home-manager-${lib.replaceStrings [ "-" ] [ "\\x2d" ] name}.service";
in
{
  users = {
    ok = lib.all
      (name:
        let u = config.users.users.${name} or null; a = agents.${name}; in
        u != null && u.uid == a.uid && u.group == name && u.isNormalUser
        && u.home == "${cfg.agentsDir}/${name}" && u.homeMode == "700"
        && !(lib.any (g: builtins.elem g [ "wheel" "sudo" "root" "adm" ]) u.extraGroups)
        && (config.users.groups.${name}.gid or null) == a.uid)
      names
    && lib.all (name: !(config.users.users ? ${name})) disabled;
    why = "every enabled agent of the machine is a normal user with its uid, a private group (gid = uid), a 0700 home under agentsDir and no admin group; disabled and cloud-only agents are not users";
  };

  approvers = {
    ok = lib.sort lib.lessThan config.users.groups.nuketown-approvers.members == lib.sort lib.lessThan approvers
      && config.users.groups.nuketown-approvers.gid != null;
    why = "the approvers (humanUser unless hall.approvers) are the members of nuketown-approvers, which has a fixed gid";
  };

  sudoers = {
    ok =
      if sudoNames == [ ] then agentRules == [ ]
      else builtins.length agentRules == 1 && lib.all entryPointOnly agentRules
        && lib.hasInfix "Defaults!${elevate}" sudo.extraConfig && lib.hasInfix "!setenv" sudo.extraConfig;
    why = "in the sudo the machine uses, one rule names the agents with sudo.enable: exactly the entry point ${elevate}, as root, NOPASSWD, and its Defaults forbid setenv; no rule names any other agent";
  };

  # NixOS checks the whole sudoers file with visudo when it builds it; the
  # town adds rules and a Defaults line, never an alias (whose name could
  # collide with one of the machine's own).
  sudoersNoAlias = {
    ok = !(lib.hasInfix "_Alias" sudo.extraConfig);
    why = "nuketown defines no sudoers alias (its rules name users and the entry point directly)";
  };

  udev = {
    ok = if lib.any (a: a.devices != [ ]) (lib.attrValues agents) then builtins.length udevOurs == 1 else udevOurs == [ ];
    why = "services.udev.packages holds nuketown's rules (nuketown-udev-rules) exactly when an agent has devices";
  };

  hall = {
    ok = builtins.elem "multi-user.target" config.systemd.services.nuketown-hall.wantedBy
      && config.systemd.sockets.nuketown-hall.socketConfig.SocketMode == "0600"
      && config.systemd.sockets.nuketown-approvers.socketConfig.SocketMode == "0660"
      && config.systemd.sockets.nuketown-approvers.socketConfig.SocketGroup == "nuketown-approvers";
    why = "the hall runs, with a root-only requester socket and an approver socket for group nuketown-approvers";
  };

  rounds = {
    ok = !(config.systemd.services.nuketown-reset.restartIfChanged)
      && lib.all (name: builtins.elem (hmUnit name) resetBefore && (config.systemd.services.${lib.removeSuffix ".service" (hmUnit name)}.serviceConfig ? ExecStart)) names;
    why = "the boot round (nuketown-reset) runs before each agent's home-manager unit (the one home-manager makes), and a switch never restarts it";
  };

  identity = {
    ok = lib.all
      (name: lib.all (f: hm.${name}.home.file ? ${f}) [ ".config/nuketown/identity.toml" ".claude/CLAUDE.md" "AGENTS.md" ])
      names;
    why = "home-manager lays identity.toml, CLAUDE.md and AGENTS.md into every agent's home";
  };

  persistence = {
    ok = lib.all
      (name: lib.all (d: builtins.elem "d ${cfg.persistDir}/agents/${name}/${d} 0700 ${name} ${name} -" config.systemd.tmpfiles.rules)
        agents.${name}.persist.directories)
      names;
    why = "every persisted directory exists under persistDir/agents/<name>";
  };

  # The secrets the gateway uses (declared credentials, extra secrets with
  # `gateway`) are never the agent's: root's sops secrets, no link in the home.
  credentials = {
    ok = lib.all
      (name:
        let
          a = agents.${name};
          sopsOf = s: if s == null || lib.hasPrefix "/" s then null else s;
          gatewaySecrets = lib.filterAttrs (_: s: s.gateway != null) a.secrets.extraSecrets;
          sopsNames = lib.filter (n: n != null)
            (lib.mapAttrsToList (sname: s: if s.source == null then "${name}/${sname}" else sopsOf s.source) gatewaySecrets
              ++ lib.mapAttrsToList (_: cr: sopsOf cr.source) a.credentials);
          rootOnly = n: let s = config.sops.secrets.${n} or null; in
            s == null || ((s.owner == null || s.owner == "root") && s.uid == 0 && (s.group == null || s.group == "root") && s.mode == "0400");
        in
        lib.all rootOnly sopsNames
        && lib.all (s: s.path == null || !(hm.${name}.home.file ? ${s.path})) (lib.attrValues gatewaySecrets))
      names
    && (lib.any (a: a.credentials != { } || lib.any (s: s.gateway != null) (lib.attrValues a.secrets.extraSecrets)) (lib.attrValues agents)
      -> (config.users.users.${cfg.hall.gateway.user}.isSystemUser or false));
    why = "the secrets the gateway uses are root's sops secrets (0400) and never placed in a home, and its system user (hall.gateway.user) exists when an agent of the machine has a credential";
  };

  town = {
    ok = config.environment.etc ? "nuketown/town.json";
    why = "/etc/nuketown/town.json is written";
  };
}
