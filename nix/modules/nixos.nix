# Nuketown: AI agents as real Unix users. The options under `nuketown.*` are
# exactly the Town schema (docs/schema.md); the module projects them to
# /etc/nuketown/town.json, which every nuketown binary reads, and implements
# the town the NixOS way: users, home-manager, sops-nix, btrfs rollback,
# impermanence, udev, sudo through the town hall.
{ config, lib, pkgs, options, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge types literalExpression mapAttrs mapAttrs' nameValuePair
    filterAttrs attrNames attrValues concatMap concatStringsSep optional optionals optionalAttrs unique;

  cfg = config.nuketown;
  toTown = import ../lib/town.nix;
  town = toTown cfg;
  townJson = pkgs.writeText "town.json" (builtins.toJSON town);
  agents = filterAttrs (_: a: a.enable) cfg.agents;
  sudoAgents = filterAttrs (_: a: a.sudo.enable) agents;
  approvers = if cfg.hall.approvers != [ ] then cfg.hall.approvers else optional (cfg.humanUser != null) cfg.humanUser;
  elevate = cfg.hall.elevatePath;
  nuketown = "${cfg.package}/bin/nuketown";
  hasHomeManager = options ? home-manager;
  hasSops = options ? sops;
  hasPersistence = options ? environment.persistence;

  # The agent's files rendered by the same Rust function `nuketown apply` uses.
  renderedHome = name: pkgs.runCommand "nuketown-home-${name}" { } ''
    ${nuketown} render home ${lib.escapeShellArg name} $out --no-settings --town ${townJson}
  '';
  udevRules = pkgs.runCommand "nuketown-udev-rules" { } ''
    mkdir -p $out/lib/udev/rules.d
    ${nuketown} render udev --setfacl ${pkgs.acl}/bin/setfacl --town ${townJson} > $out/lib/udev/rules.d/70-nuketown.rules
  '';
  sudoShim = pkgs.writeShellScriptBin "sudo" ''
    exec /run/wrappers/bin/sudo ${elevate} "$@"
  '';

  commandRule = types.submodule {
    options = {
      argv = mkOption {
        type = types.listOf types.str;
        description = "The command, program first, exactly as the agent would type it to `sudo`.";
        example = [ "systemctl" "status" ];
      };
      prefix = mkOption {
        type = types.bool;
        default = false;
        description = "Match `argv` as a prefix (further arguments allowed) instead of exactly.";
      };
    };
  };

  device = types.submodule {
    options = {
      subsystem = mkOption { type = types.str; description = "udev subsystem: `tty`, `usb`, `hidraw`, …"; example = "tty"; };
      attrs = mkOption {
        type = types.attrsOf types.str;
        description = "Attributes the device must have (usb: its own, others: a parent's).";
        example = { idVendor = "0483"; idProduct = "374b"; };
      };
      action = mkOption { type = types.str; default = "add|bind"; description = "udev ACTION pattern."; };
      permission = mkOption { type = types.strMatching "[rwx]+"; default = "rw"; description = "ACL the agent gets on the device node."; };
      group = mkOption { type = types.str; default = "plugdev"; description = "Group the agent joins for the device."; };
    };
  };

  extraSecret = types.submodule {
    options = {
      source = mkOption { type = types.nullOr types.path; default = null; description = "File to install (on NixOS usually left null: the sops secret of the same name)."; };
      path = mkOption { type = types.str; description = "Where the secret goes, relative to the home."; example = ".config/gh/token"; };
      mode = mkOption { type = types.str; default = "0400"; description = "Octal file mode."; };
    };
  };

  agentModule = types.submodule ({ name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "Whether the agent exists on this machine."; };
      uid = mkOption { type = types.ints.between 1000 59999; description = "uid, and gid of the agent's private group; agents conventionally start at 1100."; example = 1100; };
      role = mkOption { type = types.str; default = "software"; description = "One line: what the agent does."; example = "research"; };
      description = mkOption { type = types.str; default = ""; description = "A sentence about the agent (prompts, agent file)."; };
      git = {
        name = mkOption { type = types.nullOr types.str; default = null; description = "Commit author name (default: the agent's name)."; };
        email = mkOption { type = types.nullOr types.str; default = null; description = "Commit author e-mail (default: `<name>@<domain>`)."; };
        signing = mkOption { type = types.bool; default = true; description = "Sign commits and tags (SSH key, or GPG with `secrets.gpgKey`)."; };
      };
      packages = mkOption { type = types.listOf types.package; default = [ ]; description = "Packages for this agent."; example = literalExpression "[ pkgs.cargo pkgs.rustc ]"; };
      extraHomeConfig = mkOption { type = types.deferredModule; default = { }; description = "Extra home-manager configuration for the agent, merged last."; };
      persist = {
        directories = mkOption { type = types.listOf types.str; default = [ ]; description = "Home-relative directories kept across rounds."; example = [ "dev" ".local/share/direnv" ]; };
        files = mkOption { type = types.listOf types.str; default = [ ]; description = "Home-relative files kept across rounds."; example = [ ".bash_history" ]; };
      };
      secrets = {
        sshKey = mkOption { type = types.nullOr types.str; default = null; description = "Private SSH key file, or the sops key holding it; generated and persisted when null."; };
        gpgKey = mkOption { type = types.nullOr types.str; default = null; description = "Armored private GPG key file, or the sops key holding it."; };
        extraSecrets = mkOption { type = types.attrsOf extraSecret; default = { }; description = "Further secrets by name."; };
      };
      devices = mkOption { type = types.listOf device; default = [ ]; description = "Devices the agent may open (udev ACLs)."; };
      sudo = {
        enable = mkEnableOption "root for this agent, one human-approved command at a time, through the town hall";
        autoApprove = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands approved without asking a human."; };
        deny = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands denied without asking (deny wins)."; };
        timeout = mkOption { type = types.ints.between 1 86400; default = 120; description = "Seconds to wait for a human before denying."; };
      };
      portal = {
        enable = mkOption { type = types.bool; default = true; description = "Offer the agent in `nuketown portal`."; };
        command = mkOption { type = types.nullOr types.str; default = null; description = "What runs in the agent's pane (default: `claude` with claudeCode, else a login shell)."; };
        layout = mkOption { type = types.strMatching "[0-9]+/[0-9]+"; default = "75/25"; description = "Agent pane / human pane, percent."; };
      };
      claudeCode = {
        enable = mkEnableOption "Claude Code for this agent (programs.claude-code with its settings)";
        settings = mkOption { type = types.attrs; default = { }; description = "Claude Code settings.json."; };
        agentName = mkOption { type = types.nullOr types.str; default = null; description = "File name of the agent file under ~/.claude/agents/ (default: the agent's name)."; };
        extraPrompt = mkOption { type = types.lines; default = ""; description = "Text appended to the generated prompt."; };
        extraAgents = mkOption { type = types.attrsOf types.str; default = { }; description = "Further Claude Code agent files, name → markdown."; };
      };
      chat = mkOption { type = types.attrs; default = { }; description = "Matrix bridge settings (docs/schema.md, Chat)."; };
      cloud = mkOption { type = types.attrs; default = { }; description = "Kubernetes rendering settings (docs/schema.md, Cloud)."; };
    };
  });
in
{
  options.nuketown = {
    enable = mkEnableOption "Nuketown: AI agents as real Unix users";
    package = mkOption {
      type = types.package;
      description = "The nuketown package (CLI, town hall, entry point).";
    };
    domain = mkOption {
      type = types.str;
      default = "${config.networking.hostName}.local";
      defaultText = literalExpression ''"''${config.networking.hostName}.local"'';
      description = "Domain for agent e-mail addresses and identities.";
    };
    agentsDir = mkOption { type = types.str; default = "/agents"; description = "Where agent homes live; levelled every round."; };
    persistDir = mkOption { type = types.str; default = "/persist"; description = "Where persisted paths live (`<persistDir>/agents/<name>/…`)."; };
    btrfsDevice = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Block device of the btrfs filesystem holding `agentsDir` (subvolume `agents`); enables the boot-time rollback.";
      example = "/dev/disk/by-label/nixos";
    };
    sopsFile = mkOption { type = types.nullOr types.path; default = null; description = "sops file holding the agents' secrets (sops-nix)."; };
    basePackages = mkOption { type = types.listOf types.package; default = [ ]; description = "Packages every agent gets."; example = literalExpression "[ pkgs.git pkgs.ripgrep ]"; };
    projectDirs = mkOption { type = types.listOf types.str; default = [ "~/dev" ]; description = "Where projects are looked for (`~` is each user's home)."; };
    humanUser = mkOption { type = types.nullOr types.str; default = null; description = "The human: approver and portal owner."; example = "josh"; };
    humanName = mkOption { type = types.nullOr types.str; default = null; description = "The human's full name."; };
    humanEmail = mkOption { type = types.nullOr types.str; default = null; description = "The human's e-mail address."; };
    hall = {
      approvers = mkOption { type = types.listOf types.str; default = [ ]; description = "Who may approve escalations (default: humanUser)."; };
      elevatePath = mkOption {
        type = types.str;
        default = "${cfg.package}/bin/nuketown-elevate";
        defaultText = literalExpression ''"''${config.nuketown.package}/bin/nuketown-elevate"'';
        description = "The root entry point the sudoers rule names.";
      };
    };
    rebuild = {
      command = mkOption { type = types.listOf types.str; default = [ "nixos-rebuild" ]; description = "The rebuild program; the action is appended."; };
      configRepo = mkOption { type = types.nullOr types.str; default = null; description = "The configuration repository summarised before a rebuild."; };
    };
    agents = mkOption { type = types.attrsOf agentModule; default = { }; description = "The agents, by Unix user name."; };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        let uids = map (a: a.uid) (attrValues agents);
        in [
          { assertion = builtins.length uids == builtins.length (unique uids); message = "nuketown.agents: two agents share a uid; give each agent its own uid (1100, 1101, …)."; }
          { assertion = sudoAgents == { } || approvers != [ ]; message = "nuketown: an agent has sudo.enable but nobody can approve; set nuketown.humanUser."; }
          { assertion = !(lib.hasPrefix cfg.agentsDir cfg.persistDir) && !(lib.hasPrefix cfg.persistDir cfg.agentsDir); message = "nuketown.persistDir and nuketown.agentsDir must not contain each other: a round levels agentsDir."; }
          { assertion = cfg.humanUser == null || !(agents ? ${cfg.humanUser}); message = "nuketown.humanUser must not also be an agent."; }
        ] ++ concatMap
          (name:
            let a = agents.${name}; in
            map (p: { assertion = !(lib.hasPrefix "/" p) && !(lib.hasInfix ".." p); message = "nuketown.agents.${name}.persist: \"${p}\" must be relative to the home and stay inside it."; })
              (a.persist.directories ++ a.persist.files)
            ++ map (g: { assertion = !(builtins.elem g [ "wheel" "sudo" "root" "adm" ]); message = "nuketown.agents.${name}.devices: group ${g} would give root without a human; use plugdev or dialout."; })
              (map (d: d.group) a.devices))
          (attrNames agents);

      environment.etc."nuketown/town.json".source = townJson;
      environment.systemPackages = [ cfg.package ];

      users.groups = {
        nuketown-approvers.members = approvers;
      } // mapAttrs (_: a: { gid = a.uid; }) agents
      // builtins.listToAttrs (map (g: nameValuePair g { }) (unique (concatMap (a: map (d: d.group) a.devices) (attrValues agents))));

      users.users = mapAttrs
        (name: a: {
          isNormalUser = true;
          uid = a.uid;
          group = name;
          home = "${cfg.agentsDir}/${name}";
          createHome = true;
          homeMode = "700";
          description = "nuketown agent (${a.role})";
          extraGroups = unique (map (d: d.group) a.devices);
          shell = pkgs.bashInteractive;
        })
        agents;

      services.udev.packages = optional (lib.any (a: a.devices != [ ]) (attrValues agents)) udevRules;

      # Root only through the town hall: the agent may run exactly the entry point.
      security.sudo.extraRules = optional (sudoAgents != { }) {
        users = attrNames sudoAgents;
        runAs = "root";
        commands = [{ command = elevate; options = [ "NOPASSWD" ]; }];
      };
      security.sudo.extraConfig = lib.optionalString (sudoAgents != { }) ''
        Defaults!${elevate} env_reset, !setenv
      '';

      systemd.services.nuketown-hall = {
        description = "Nuketown town hall: human approval of agent escalations";
        wantedBy = [ "multi-user.target" ];
        after = [ "nuketown-reset.service" ];
        restartTriggers = [ townJson ];
        serviceConfig = {
          Type = "notify";
          ExecStart = "${nuketown} hall";
          RuntimeDirectory = "nuketown";
          RuntimeDirectoryPreserve = true;
          StateDirectory = "nuketown";
          Restart = "on-failure";
        };
      };
      # Socket activation: the requester socket root-only, the approver socket
      # for group nuketown-approvers; the hall tells them apart by name.
      systemd.sockets.nuketown-hall = {
        description = "Nuketown town hall: requester socket (root only)";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ "/run/nuketown/hall.sock" ];
        socketConfig = { SocketMode = "0600"; FileDescriptorName = "requester"; Service = "nuketown-hall.service"; };
      };
      systemd.sockets.nuketown-approvers = {
        description = "Nuketown town hall: approver socket";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ "/run/nuketown/approvers.sock" ];
        socketConfig = { SocketMode = "0660"; SocketGroup = "nuketown-approvers"; FileDescriptorName = "approvers"; Service = "nuketown-hall.service"; };
      };

      systemd.services.nuketown-reset = {
        description = "Nuketown: a new round for every agent";
        wantedBy = [ "multi-user.target" ];
        before = [ "nuketown-hall.service" ];
        after = [ "local-fs.target" ];
        unitConfig.DefaultDependencies = false;
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; ExecStart = "${nuketown} reset --all --town /etc/nuketown/town.json"; };
      };

      # Persisted paths exist before the homes are laid down.
      systemd.tmpfiles.rules = concatMap
        (name:
          let a = agents.${name}; root = "${cfg.persistDir}/agents/${name}"; in
          [ "d ${root} 0700 ${name} ${name} -" ]
          ++ map (d: "d ${root}/${d} 0700 ${name} ${name} -") a.persist.directories
          ++ map (f: "f ${root}/${f} 0600 ${name} ${name} -") a.persist.files)
        (attrNames agents);
    }

    {
      # Each agent with chat: its Matrix bridge, run as the agent.
      systemd.services = mapAttrs'
        (name: _: nameValuePair "nuketown-chat-${name}" {
          description = "Nuketown: ${name}'s Matrix bridge";
          wantedBy = [ "multi-user.target" ];
          wants = [ "network-online.target" ];
          after = [ "network-online.target" "nuketown-reset.service" ];
          restartTriggers = [ townJson ];
          serviceConfig = {
            User = name;
            ExecStart = "${nuketown} chat ${name} --town /etc/nuketown/town.json";
            Restart = "always";
            RestartSec = 5;
            NoNewPrivileges = true;
            PrivateTmp = true;
          };
        })
        (filterAttrs (_: a: a.chat.enable or false) agents);
    }

    (mkIf (cfg.btrfsDevice != null) {
      fileSystems.${cfg.agentsDir} = { device = cfg.btrfsDevice; fsType = "btrfs"; options = [ "subvol=agents" ]; };
      # A new round at boot: every home is a subvolume, recreated empty before the homes mount.
      boot.initrd.postDeviceCommands = lib.mkAfter ''
        mkdir -p /nuketown-btrfs
        mount -t btrfs -o subvol=/ ${cfg.btrfsDevice} /nuketown-btrfs
        if [ -d /nuketown-btrfs/agents ]; then
          for home in /nuketown-btrfs/agents/*; do
            [ -d "$home" ] || continue
            btrfs subvolume delete "$home" >/dev/null 2>&1 || rm -rf "$home"
          done
        else
          btrfs subvolume create /nuketown-btrfs/agents
        fi
        ${concatStringsSep "\n" (map (name: ''
          btrfs subvolume create /nuketown-btrfs/agents/${name}
          chown ${toString agents.${name}.uid}:${toString agents.${name}.uid} /nuketown-btrfs/agents/${name}
          chmod 700 /nuketown-btrfs/agents/${name}
        '') (attrNames agents))}
        umount /nuketown-btrfs
      '';
      boot.initrd.supportedFilesystems = [ "btrfs" ];
    })

    (optionalAttrs hasHomeManager {
      home-manager.users = mapAttrs
        (name: a: {
          imports = [ a.extraHomeConfig ];
          home.username = name;
          home.homeDirectory = "${cfg.agentsDir}/${name}";
          home.stateVersion = lib.mkDefault config.system.stateVersion;
          home.packages = cfg.basePackages ++ a.packages;
          home.file = mapAttrs' (path: _: nameValuePair path { source = "${renderedHome name}/${path}"; })
            (builtins.listToAttrs (map (p: nameValuePair p true) ([
              ".config/nuketown/identity.toml"
              ".claude/CLAUDE.md"
              ".claude/agents/${if a.claudeCode.agentName != null then a.claudeCode.agentName else name}.md"
              "AGENTS.md"
              ".codex/AGENTS.md"
            ] ++ optionals a.claudeCode.enable (map (n: ".claude/agents/${n}.md") (attrNames a.claudeCode.extraAgents)))));
          programs.git = {
            enable = true;
            userName = if a.git.name != null then a.git.name else name;
            userEmail = if a.git.email != null then a.git.email else "${name}@${cfg.domain}";
            signing = mkIf a.git.signing {
              signByDefault = true;
              format = if a.secrets.gpgKey != null then "openpgp" else "ssh";
              key = if a.secrets.gpgKey != null then null else "${cfg.agentsDir}/${name}/.ssh/id_ed25519.pub";
            };
          };
          programs.direnv = { enable = true; nix-direnv.enable = true; };
          programs.bash = {
            enable = true;
            initExtra = ''
              export NUKETOWN_AGENT=${name}
            '' + lib.optionalString a.sudo.enable ''
              # sudo asks the town hall: a human approves each exact command.
              export PATH="${sudoShim}/bin:$PATH"
            '';
          };
          programs.claude-code = mkIf a.claudeCode.enable {
            enable = true;
            settings = a.claudeCode.settings;
          };
        })
        agents;
    })

    (optionalAttrs hasSops {
      sops.secrets = lib.mkMerge (map
        (name:
          let a = agents.${name}; home = "${cfg.agentsDir}/${name}"; own = { owner = name; group = name; } // optionalAttrs (cfg.sopsFile != null) { sopsFile = cfg.sopsFile; };
          in
          optionalAttrs (a.secrets.sshKey != null) { "${a.secrets.sshKey}" = own // { path = "${home}/.ssh/id_ed25519"; mode = "0600"; }; }
          // optionalAttrs (a.secrets.gpgKey != null) { "${a.secrets.gpgKey}" = own // { path = "${cfg.persistDir}/agents/${name}/.nuketown/gpg-key.asc"; mode = "0400"; }; }
          // mapAttrs (_: s: own // { path = "${home}/${s.path}"; mode = s.mode; }) a.secrets.extraSecrets)
        (attrNames agents));
    })

    (optionalAttrs hasPersistence {
      environment.persistence.${cfg.persistDir} = {
        hideMounts = true;
        users = mapAttrs
          (name: a: {
            home = "${cfg.agentsDir}/${name}";
            directories = map (d: { directory = d; mode = "0700"; }) a.persist.directories;
            files = a.persist.files;
          })
          agents;
      };
    })
  ]);
}
