# The agents as users of this machine: accounts and groups, homes laid down
# by home-manager (identity files rendered by the same Rust function
# `nuketown apply` uses), keys and secrets from sops-nix, persisted paths
# through impermanence, device ACLs through udev, and each agent's chat
# bridge.
{ config, lib, pkgs, options, utils, ... }@args:

let
  inherit (lib) mkIf mkMerge mapAttrs mapAttrs' nameValuePair filterAttrs attrNames attrValues
    concatMap optional optionals optionalAttrs unique;
  c = import ./common.nix args;
  inherit (c) cfg agents nuketown sudoShim homeOf hasSops isFile;

  persistingAgents = filterAttrs (_: a: a.persist.directories != [ ] || a.persist.files != [ ]) agents;
  egressRules = a: if builtins.isList a.network.egress then a.network.egress else [ ];
  systemStateVersion = config.system.stateVersion;

  # The agent's files rendered by the same Rust function `nuketown apply` uses.
  renderedHome = name: pkgs.runCommand "nuketown-home-${name}" { } ''
    ${nuketown} render home ${lib.escapeShellArg name} $out --no-settings --town ${c.townJson}
  '';
  udevRules = pkgs.runCommand "nuketown-udev-rules" { } ''
    mkdir -p $out/lib/udev/rules.d
    ${nuketown} render udev --setfacl ${pkgs.acl}/bin/setfacl --town ${c.townJson} > $out/lib/udev/rules.d/70-nuketown.rules
  '';
  # The Claude Code agent file's name: `<name>-<role>` unless claudeCode.agentName says.
  agentFile = name: a:
    if a.claudeCode.agentName != null then a.claudeCode.agentName
    else "${name}-${lib.replaceStrings [ " " "/" ] [ "-" "-" ] a.role}";

  # The sops secrets an agent reads: a secret the gateway uses must not be one of them.
  agentReadable = concatMap
    (name: let a = agents.${name}; in concatMap
      (sname: let s = a.secrets.extraSecrets.${sname}; n = c.extraSopsName name sname s; in
        lib.optional (s.gateway == null && n != null) { inherit name sname n; })
      (attrNames a.secrets.extraSecrets))
    (attrNames agents);

  # Assertions about an agent's credentials (the Rust validator refuses the
  # same when the build renders the home; here the option is named).
  credentialAssertions = name: a:
    let
      key = "nuketown.agents.${name}";
      validName = n: builtins.match "[a-z0-9][a-z0-9-]{0,31}" n != null;
      readBy = sops: lib.findFirst (r: r.n == sops) null agentReadable;
      notReadable = k: sops:
        let r = readBy sops; in lib.optional (r != null) {
          assertion = false;
          message = "${k}: the sops secret \"${sops}\" is also nuketown.agents.${r.name}.secrets.extraSecrets.${r.sname}, which ${r.name} reads; the gateway's key must be root's alone: give it a sops secret of its own, or set gateway on that extra secret instead.";
        };
      gatewaySecrets = filterAttrs (_: s: s.gateway != null) a.secrets.extraSecrets;
      modelApis = api: attrNames (filterAttrs (_: cr: cr.api == api) a.credentials);
    in
    concatMap
      (sname:
        let s = gatewaySecrets.${sname}; k = "${key}.secrets.extraSecrets.${sname}"; n = c.extraSopsName name sname s; in
        [
          { assertion = builtins.elem s.gateway [ "anthropic" "openai" "github" ]; message = "${k}.gateway = \"${s.gateway}\": an extra secret goes to the gateway as \"anthropic\", \"openai\" or \"github\"; an `http` credential needs its hosts and header: declare it as ${key}.credentials.${sname} instead."; }
          { assertion = validName sname; message = "${k}: \"${sname}\" cannot name a credential at the gateway (it is a URL path segment): use at most 32 lowercase letters, digits and '-'."; }
          { assertion = !(a.credentials ? ${sname}); message = "${k}.gateway: ${key}.credentials.${sname} is declared too; keep one."; }
        ] ++ lib.optionals (n != null) (notReadable "${k}.gateway" n))
      (attrNames gatewaySecrets)
    ++ concatMap
      (cname:
        let cr = a.credentials.${cname}; k = "${key}.credentials.${cname}"; in
        [
          { assertion = validName cname; message = "${k}: \"${cname}\" cannot name a credential (it is the gateway's URL path segment): use at most 32 lowercase letters, digits and '-'."; }
          { assertion = (cr.source == null) != (cr.systemdCredential == null); message = "${k}: set exactly one of source (a sops secret's name like \"${name}/${cname}\", or a file only root reads) and systemdCredential (handed to the hall with systemd.services.nuketown-hall.serviceConfig.LoadCredential)."; }
          { assertion = cr.api != "http" || (cr.hosts != [ ] && cr.header != null); message = "${k}: an `http` credential needs the hosts it is for and the header that carries it, e.g. hosts = [ \"api.example.com\" ]; header = \"Authorization\";."; }
          { assertion = !(builtins.elem cr.api [ "anthropic" "openai" ]) || cr.hosts == [ ]; message = "${k}.hosts: a model API (${cr.api}) is reached at the gateway's /${cname}, never through its proxy; remove hosts (set upstream for another endpoint)."; }
        ]
        ++ lib.optionals (cr.source != null) (secretAssertions name "credentials.${cname}.source" cr.source)
        ++ lib.optionals (cr.source != null && !(isFile cr.source)) (notReadable "${k}.source" cr.source))
      (attrNames a.credentials)
    ++ map
      (api: {
        assertion = builtins.length (modelApis api) <= 1;
        message = "${key}: ${lib.concatStringsSep " and " (modelApis api)} are both ${name}'s `${api}` credential; the CLIs reach one ${api} endpoint: keep one.";
      })
      [ "anthropic" "openai" ];

  # A key or secret: a sops secret's name (needs sops-nix), or a file outside the store.
  secretAssertions = name: what: p:
    let key = "nuketown.agents.${name}"; in
    if isFile p then [{ assertion = !(lib.hasPrefix builtins.storeDir p); message = "${key}.${what}: \"${p}\" is in the Nix store, which every user can read; keep secrets outside it (a sops secret's name, /run/keys, …)."; }]
    else [
      { assertion = hasSops; message = "${key}.${what}: \"${p}\" names a sops secret: import sops-nix (nuketown.nixosModules.default does), or give the absolute path of the file."; }
      { assertion = builtins.match "[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*" p != null && !(lib.hasInfix ".." p); message = "${key}.${what}: \"${p}\" is neither an absolute path nor a sops secret name (words of letters, digits, '.', '_' and '-' joined by '/', e.g. \"${name}/ssh-key\")."; }
    ];

  # Assertions about one agent.
  agentAssertions = name:
    let
      a = agents.${name};
      key = "nuketown.agents.${name}";
      secret = secretAssertions name;
    in
    map (p: { assertion = !(lib.hasPrefix "/" p) && !(lib.hasInfix ".." p); message = "${key}.persist: \"${p}\" must be relative to the home and stay inside it."; })
      (a.persist.directories ++ a.persist.files)
    ++ map (g: { assertion = !(builtins.elem g [ "wheel" "sudo" "root" "adm" ]); message = "${key}.devices: group ${g} would give root without a human; use plugdev or dialout."; })
      (map (d: d.group) a.devices)
    ++ map (r: { assertion = (r.cidr == null) != (r.host == null); message = "${key}.network.egress: each rule names one destination, cidr or host."; }) (egressRules a)
    ++ map (r: { assertion = r.host == null; message = "${key}.network.egress: host \"${toString r.host}\" cannot be enforced on NixOS (the rules are built without DNS); write its addresses as cidr, or let the agent ask (`nuketown ask network`)."; }) (egressRules a)
    ++ lib.optionals (a.secrets.sshKey != null) (secret "secrets.sshKey" a.secrets.sshKey)
    ++ lib.optionals (a.secrets.gpgKey != null) (secret "secrets.gpgKey" a.secrets.gpgKey)
    ++ concatMap
      (sname:
        let s = a.secrets.extraSecrets.${sname}; in
        if s.source != null then secret "secrets.extraSecrets.${sname}.source" s.source
        else [{ assertion = hasSops; message = "${key}.secrets.extraSecrets.${sname} has no source: import sops-nix (nuketown.nixosModules.default does) to install the sops secret \"${name}/${sname}\", or set its source."; }])
      (attrNames a.secrets.extraSecrets)
    ++ credentialAssertions name a
    ++ lib.optional (a.sudo.commands != [ ]) {
      assertion = a.sudo.enable;
      message = "${key}.sudo.commands lists the commands the agent may ask for, but sudo.enable is false, so it may ask for none; set sudo.enable = true, or remove commands.";
    }
    ++ lib.optional (a.claudeCode.enable && a.claudeCode.package != null) {
      assertion = (builtins.tryEval a.claudeCode.package.drvPath).success;
      message = ''
        ${key}.claudeCode: the package ${a.claudeCode.package.name or "claude-code"} cannot be used: nixpkgs' claude-code is unfree.
        Allow it, e.g. nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "claude-code" ];
        or set ${key}.claudeCode.package = null to install Claude Code another way.'';
    };
in
{
  config = mkIf cfg.enable (mkMerge [
    {
      assertions = concatMap agentAssertions (attrNames agents) ++ [{
        # impermanence keeps a home's persisted paths at persistDir + home + path;
        # nuketown (reset, apply) at persistDir/agents/<name>/path. They agree for /agents only.
        assertion = !c.hasPersistence || persistingAgents == { } || cfg.agentsDir == "/agents";
        message = "nuketown.agentsDir is \"${cfg.agentsDir}\": with impermanence, persisted paths live at persistDir + home, which is persistDir/agents/<name> (where nuketown reset binds them) only with agentsDir = \"/agents\".";
      }];

      # Fixed gids: impermanence warns about groups without one (their gid
      # could change across reboots when /var/lib/nixos is not persisted).
      # mkDefault: a gid set elsewhere (e.g. another module's plugdev) wins.
      users.groups = mapAttrs (_: a: { gid = a.uid; }) agents
        // builtins.listToAttrs (map (g: nameValuePair g (optionalAttrs (g == "plugdev") { gid = lib.mkDefault 31101; }))
        (unique (concatMap (a: map (d: d.group) a.devices) (attrValues agents))));

      users.users = mapAttrs
        (name: a: {
          isNormalUser = true;
          uid = a.uid;
          group = name;
          home = homeOf name;
          createHome = true;
          homeMode = "700";
          description = "nuketown agent (${a.role})";
          extraGroups = unique (map (d: d.group) a.devices);
          shell = pkgs.bashInteractive;
        })
        agents;

      services.udev.packages = optional (lib.any (a: a.devices != [ ]) (attrValues agents)) udevRules;

      # Persisted paths exist before the homes are laid down.
      systemd.tmpfiles.rules = concatMap
        (name:
          let a = agents.${name}; root = "${cfg.persistDir}/agents/${name}"; in
          [ "d ${root} 0700 ${name} ${name} -" ]
          ++ map (d: "d ${root}/${d} 0700 ${name} ${name} -") a.persist.directories
          ++ map (f: "f ${root}/${f} 0600 ${name} ${name} -") a.persist.files)
        (attrNames agents);

      # Each agent with chat: its Matrix bridge, run as the agent. An agent
      # with sudo keeps the ability to ask (no NoNewPrivileges) and finds the
      # shim first on its PATH.
      systemd.services = mapAttrs'
        (name: a: nameValuePair "nuketown-chat-${name}" {
          description = "Nuketown: ${name}'s Matrix bridge";
          wantedBy = [ "multi-user.target" ];
          wants = [ "network-online.target" ];
          after = [ "network-online.target" "nuketown-reset.service" ];
          restartTriggers = [ c.townJson ];
          path = optional a.sudo.enable sudoShim;
          serviceConfig = {
            User = name;
            ExecStart = "${nuketown} chat ${name} --town /etc/nuketown/town.json";
            Restart = "always";
            RestartSec = 5;
            NoNewPrivileges = !a.sudo.enable;
            PrivateTmp = true;
          };
        })
        (filterAttrs (_: a: a.chat.enable or false) agents);
    }

    (optionalAttrs c.hasHomeManager {
      home-manager.users = mapAttrs
        (name: a: { config, ... }: {
          imports = [ a.extraHomeConfig ];
          home.stateVersion = lib.mkDefault systemStateVersion;
          home.packages = cfg.basePackages ++ a.packages;
          home.sessionVariables = {
            NUKETOWN_AGENT = name;
            # The agent's keys are the town's: ssh, git push and git signing use them through the hall.
            SSH_AUTH_SOCK = "/run/nuketown/ssh/${name}/agent.sock";
          }
          # Its API keys and tokens too: its tools reach them through the gateway, which adds them.
          // c.gatewayEnv name;
          home.sessionPath = optional a.sudo.enable "${sudoShim}/bin";
          home.file =
            mapAttrs' (path: _: nameValuePair path { source = "${renderedHome name}/${path}"; })
              (lib.genAttrs ([
                ".config/nuketown/identity.toml"
                ".claude/CLAUDE.md"
                ".claude/agents/${agentFile name a}.md"
                "AGENTS.md"
                ".codex/AGENTS.md"
              ] ++ optionals a.claudeCode.enable (map (n: ".claude/agents/${n}.md") (attrNames a.claudeCode.extraAgents))) (_: null))
            # Secrets stay where they are installed (outside the levelled
            # home); the home gets a link, laid again after every round. One
            # handed to the gateway gets none: it is root's.
            // lib.mapAttrs' (sname: s: nameValuePair s.path {
              source = config.lib.file.mkOutOfStoreSymlink (c.sourceOf name sname s);
            }) (filterAttrs (_: s: s.path != null && s.gateway == null) a.secrets.extraSecrets);
          programs.git = {
            enable = true;
            settings.user = {
              name = if a.git.name != null then a.git.name else name;
              email = if a.git.email != null then a.git.email else "${name}@${cfg.domain}";
            };
            signing = mkIf a.git.signing {
              signByDefault = true;
              format = if a.secrets.gpgKey != null then "openpgp" else "ssh";
              key = if a.secrets.gpgKey != null then null else "${homeOf name}/.ssh/id_ed25519.pub";
            };
          };
          programs.direnv = { enable = true; nix-direnv.enable = true; };
          programs.bash.enable = true;
          programs.claude-code = mkIf a.claudeCode.enable {
            enable = true;
            package = a.claudeCode.package;
            settings = a.claudeCode.settings;
          };
        })
        agents;
    })
    (optionalAttrs c.hasHomeManager {
      # home-manager lays the dotfiles into the new homes the boot round made.
      systemd.services = mkIf (!config.home-manager.startAsUserService) (mapAttrs'
        (name: _: nameValuePair "home-manager-${utils.escapeSystemdPath name}" {
          after = [ "nuketown-reset.service" ];
          wants = [ "nuketown-reset.service" ];
        })
        agents);
    })

    (optionalAttrs hasSops {
      # The sops secrets the town names: the agents' keys and the gateway's secrets (root's), and extra secrets (the agent's).
      sops.secrets = c.sopsSecrets;
    })

    (optionalAttrs c.hasPersistence {
      environment.persistence.${cfg.persistDir} = mkIf (persistingAgents != { }) {
        hideMounts = true;
        users = mapAttrs
          (name: a: {
            directories = map (d: { directory = d; mode = "0700"; }) a.persist.directories;
            files = a.persist.files;
          })
          persistingAgents;
      };
    })
  ]);
}
