# Nuketown: AI agents as real Unix users. The options under `nuketown.*` are
# exactly the Town schema (docs/schema.md); the module projects them to
# /etc/nuketown/town.json, which every nuketown binary reads, and implements
# the town the NixOS way: users, home-manager, sops-nix, btrfs rollback,
# impermanence, udev, sudo (or sudo-rs) through the town hall.
#
# home-manager is required; sops-nix and impermanence are used when their
# modules are imported (nuketown.nixosModules.default imports all three).
{ config, lib, pkgs, options, utils, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge types literalExpression mapAttrs mapAttrs' nameValuePair
    filterAttrs attrNames attrValues concatMap concatStringsSep optional optionals optionalAttrs unique;

  cfg = config.nuketown;
  # The agents that are users of this machine: enabled and not declared for
  # the cloud only (host.enable). town.json still lists every agent, for the
  # cluster render.
  agents = filterAttrs (_: a: a.enable && a.host.enable) cfg.agents;
  sudoAgents = filterAttrs (_: a: a.sudo.enable) agents;
  restrictedAgents = filterAttrs (_: a: a.network.egress != "all") agents;
  egressRules = a: if builtins.isList a.network.egress then a.network.egress else [ ];
  # The agents' egress rules, the same ruleset `nuketown apply` renders
  # (crates/town/src/network.rs) in nft's table syntax; the sets of
  # temporary rules belong to the town hall.
  nftRule = a: r:
    let
      family = if lib.hasInfix ":" r.cidr then "ip6" else "ip";
      ports = if r.ports == [ ] then "" else " meta l4proto { tcp, udp } th dport { ${concatStringsSep ", " (map toString r.ports)} }";
    in "meta skuid ${toString a.uid} ${family} daddr ${r.cidr}${ports} accept";
  nftContent = ''
    set restricted { type uid; elements = { ${concatStringsSep ", " (map (a: toString a.uid) (attrValues restrictedAgents))} }; }
    set grants4 { type uid . ipv4_addr . inet_service; flags interval, timeout; }
    set grants6 { type uid . ipv6_addr . inet_service; flags interval, timeout; }
    chain output {
      type filter hook output priority filter; policy accept;
      meta skuid @restricted jump agents
    }
    chain agents {
      oif "lo" ip daddr 127.0.0.1 accept
      oif "lo" ip6 daddr ::1 accept
      meta l4proto { tcp, udp } th dport 53 accept
      ct direction reply accept
      meta l4proto { tcp, udp } meta skuid . ip daddr . th dport @grants4 accept
      meta l4proto { tcp, udp } meta skuid . ip6 daddr . th dport @grants6 accept
      ${concatStringsSep "\n  " (concatMap (a: map (nftRule a) (builtins.filter (r: r.cidr != null) (egressRules a))) (attrValues restrictedAgents))}
      reject with icmpx type admin-prohibited
    }
  '';
  persistingAgents = filterAttrs (_: a: a.persist.directories != [ ] || a.persist.files != [ ]) agents;
  approvers = if cfg.hall.approvers != [ ] then cfg.hall.approvers else optional (cfg.humanUser != null) cfg.humanUser;
  elevate = cfg.hall.elevatePath;
  nuketown = "${cfg.package}/bin/nuketown";
  hasHomeManager = options ? home-manager.users;
  hasSops = options ? sops.secrets;
  hasPersistence = options ? environment.persistence;
  homeOf = name: "${cfg.agentsDir}/${name}";
  systemStateVersion = config.system.stateVersion;

  # An extra secret without `source` is the sops secret `<agent>/<name>`
  # (namespaced: two agents may each have a `gh`); sops-nix installs it under
  # /run/secrets, outside the home a round levels.
  sopsName = agent: secret: "${agent}/${secret}";
  secretSource = agent: secret: s:
    if s.source != null then s.source
    else if hasSops then config.sops.secrets.${sopsName agent secret}.path
    else null;
  sopsSecretsOf = a: filterAttrs (_: s: s.source == null) a.secrets.extraSecrets;

  # town.json: the options as the schema has them, with each extra secret's
  # source resolved to where it is on this machine.
  town = import ../lib/town.nix (cfg // {
    agents = mapAttrs
      (name: a: if !(a.enable && a.host.enable) then a else a // {
        secrets = a.secrets // {
          extraSecrets = mapAttrs (sname: s: s // { source = secretSource name sname s; }) a.secrets.extraSecrets;
        };
      })
      cfg.agents;
  });
  townJson = pkgs.writeText "town.json" (builtins.toJSON town);

  # The agent's files rendered by the same Rust function `nuketown apply` uses.
  renderedHome = name: pkgs.runCommand "nuketown-home-${name}" { } ''
    ${nuketown} render home ${lib.escapeShellArg name} $out --no-settings --town ${townJson}
  '';
  udevRules = pkgs.runCommand "nuketown-udev-rules" { } ''
    mkdir -p $out/lib/udev/rules.d
    ${nuketown} render udev --setfacl ${pkgs.acl}/bin/setfacl --town ${townJson} > $out/lib/udev/rules.d/70-nuketown.rules
  '';
  # The agent's `sudo`: first on the PATH of every login shell (home.sessionPath,
  # read from ~/.profile by interactive and non-interactive login shells alike)
  # and of the agent's services; asks the town hall through the entry point.
  sudoShim = pkgs.writeShellScriptBin "sudo" ''
    exec /run/wrappers/bin/sudo ${elevate} "$@"
  '';

  # Every home a new, empty btrfs subvolume owned by its agent (boot rollback);
  # homes an interrupted round left (`.<name>.new-round`) and levelled homes
  # still in `nuketown reset`'s trash go too.
  rollback = ''
    mkdir -p /nuketown-btrfs
    mount -t btrfs -o subvol=/ ${cfg.btrfsDevice} /nuketown-btrfs
    if [ -d /nuketown-btrfs/agents ]; then
      for home in /nuketown-btrfs/agents/* /nuketown-btrfs/agents/.[!.]*; do
        [ -d "$home" ] || continue
        case "$home" in
          */.nuketown-trash)
            for old in "$home"/*; do
              [ -d "$old" ] || continue
              btrfs subvolume delete "$old" >/dev/null 2>&1 || rm -rf "$old"
            done ;;
        esac
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

  keyPolicy = what: default: mkOption {
    type = types.enum [ "allow" "ask" "deny" ];
    inherit default;
    description = "What the town does with ${what}: `allow` signs (audited), `ask` waits for an approver's yes (denied on timeout), `deny` refuses (audited).";
  };
  keyHost = types.submodule {
    options = {
      hostKey = mkOption {
        type = types.str;
        description = "The server's public host key as `ssh-keyscan HOST` prints it, without the host name; the town recognises the host by it.";
        example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
      };
      authenticate = mkOption {
        type = types.nullOr (types.enum [ "allow" "ask" "deny" ]);
        default = null;
        description = "The policy for logging in to this host (default: `keys.authenticate`).";
      };
    };
  };

  egressRule = types.submodule {
    options = {
      cidr = mkOption { type = types.nullOr types.str; default = null; example = "10.0.0.0/8"; description = "An address or network the agent may reach."; };
      host = mkOption { type = types.nullOr types.str; default = null; description = "A host name (hosts running `nuketown apply` only: NixOS builds its rules without DNS; write addresses as `cidr`)."; };
      ports = mkOption { type = types.listOf types.port; default = [ ]; example = [ 443 ]; description = "TCP and UDP destination ports; empty means all."; };
    };
  };

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
      source = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          Absolute path of the file to install. Left null on NixOS, it is the
          sops secret `<agent>/<name>` (sops-nix installs it under
          /run/secrets; town.json records that path).
        '';
        example = "/run/keys/ada-gh-token";
      };
      path = mkOption { type = types.str; description = "Where the secret appears, relative to the home (a link to the source)."; example = ".config/gh/hosts.yml"; };
      mode = mkOption { type = types.strMatching "[0-7]{3,4}"; default = "0400"; description = "Octal file mode (of the sops secret)."; };
    };
  };

  keyPath = what: mkOption {
    type = types.nullOr types.str;
    default = null;
    description = ''
      Absolute path of the ${what} file, as on every host. With sops-nix:
      `config.sops.secrets."<agent>/${if what == "private SSH key" then "ssh-key" else "gpg-key"}".path`
      (and that sops secret declared). ${if what == "private SSH key" then ''
      `nuketown apply` and `nuketown reset` import it into the town's sealed
      key store (when it changed); it is never placed in the home: the
      agent uses it through its ssh-agent socket.'' else ''
      `nuketown reset` imports it into the agent's keyring every round.''}
    '';
    example = literalExpression ''config.sops.secrets."ada/ssh-key".path'';
  };

  agentModule = types.submodule ({ name, config, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; description = "Whether the agent exists (on this machine, in the cluster, or both)."; };
      host.enable = mkOption {
        type = types.bool;
        default = !(config.cloud.enable or false);
        defaultText = literalExpression "!config.nuketown.agents.<name>.cloud.enable";
        example = true;
        description = ''
          Whether the agent is a user of this machine (its account, home,
          keys, sudo, units). Defaults to true unless `cloud.enable`: an agent
          declared for the cluster gets no user here. Set both `cloud.enable`
          and `host.enable` to run the agent on this machine and in the
          cluster.
        '';
      };
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
        sshKey = keyPath "private SSH key";
        gpgKey = keyPath "armored private GPG key";
        extraSecrets = mkOption { type = types.attrsOf extraSecret; default = { }; description = "Further secrets by name."; };
      };
      devices = mkOption { type = types.listOf device; default = [ ]; description = "Devices the agent may open (udev ACLs)."; };
      sudo = {
        enable = mkEnableOption "root for this agent, one human-approved command at a time, through the town hall";
        autoApprove = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands approved without asking a human."; };
        deny = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands denied without asking (deny wins)."; };
        timeout = mkOption { type = types.ints.between 1 86400; default = 120; description = "Seconds to wait for a human before denying."; };
        maxPending = mkOption { type = types.ints.between 1 1000; default = 8; description = "Most requests this agent may have waiting for a human at once; more are denied."; };
      };
      keys = {
        sign = keyPolicy "SSH signatures in namespace `git` (commits and tags)" "allow";
        signOther = keyPolicy "SSH signatures in any other namespace" "deny";
        authenticate = keyPolicy "SSH logins to a host declared in `keys.hosts`" "allow";
        authenticateOther = keyPolicy "SSH logins to any other host, or one the town cannot identify" "ask";
        hosts = mkOption { type = types.attrsOf keyHost; default = { }; description = "Hosts the agent logs in to, by name, known by their host keys."; };
        timeout = mkOption { type = types.ints.between 1 86400; default = 120; description = "Seconds to wait for an approver before denying a key use."; };
      };
      network.egress = mkOption {
        type = types.either (types.enum [ "all" "none" ]) (types.listOf egressRule);
        default = "all";
        example = literalExpression ''[ { cidr = "0.0.0.0/0"; ports = [ 443 ]; } { cidr = "10.20.0.0/16"; ports = [ 22 ]; } ]'';
        description = ''
          Where the agent may connect: `"all"`, `"none"` (DNS and loopback
          only) or an allow-list of networks and TCP/UDP ports. Enforced on
          the agent's uid by nftables (`networking.nftables`, table `inet
          nuketown`) and, in a cluster, by the agent's NetworkPolicy. The agent
          asks for more with `nuketown ask network HOST[:PORT] --for 1h`; a
          human approves on any channel.
        '';
      };
      rebuild.enable = mkEnableOption "the rebuild coordinator for this agent (`nuketown rebuild`: build as the agent, switch after a human's approval)";
      portal = {
        enable = mkOption { type = types.bool; default = true; description = "Offer the agent in `nuketown portal`."; };
        command = mkOption { type = types.nullOr types.str; default = null; description = "What runs in the agent's pane (default: `claude` with claudeCode, else a login shell)."; };
        layout = mkOption { type = types.strMatching "[0-9]+/[0-9]+"; default = "75/25"; description = "Agent pane / human pane, percent."; };
      };
      claudeCode = {
        enable = mkEnableOption "Claude Code for this agent (home-manager's programs.claude-code with its settings)";
        package = mkOption {
          type = types.nullOr types.package;
          default = pkgs.claude-code;
          defaultText = literalExpression "pkgs.claude-code";
          description = ''
            The Claude Code package (NixOS only). nixpkgs' claude-code is
            unfree: allow it (`nixpkgs.config.allowUnfreePredicate`), or set
            null to install Claude Code another way.
          '';
        };
        settings = mkOption { type = types.attrs; default = { }; description = "Claude Code settings.json."; };
        agentName = mkOption { type = types.nullOr types.str; default = null; description = "File name of the agent file under ~/.claude/agents/ (default: the agent's name)."; };
        extraPrompt = mkOption { type = types.lines; default = ""; description = "Text appended to the generated prompt."; };
        extraAgents = mkOption { type = types.attrsOf types.str; default = { }; description = "Further Claude Code agent files, name → markdown."; };
      };
      chat = mkOption { type = types.attrs; default = { }; description = "Matrix bridge settings (docs/schema.md, Chat)."; };
      cloud = mkOption {
        default = { };
        description = "Kubernetes rendering settings (docs/schema.md, Cloud); every key of the schema's `cloud` table.";
        type = types.submodule ({ config, ... }: {
          freeformType = types.attrsOf types.anything;
          options = {
            enable = mkEnableOption "this agent in the cluster (`nuketown cloud render`; without host.enable, in the cluster only)";
            image = mkOption {
              type = types.nullOr types.str;
              default = if config.enable && cfg.buildImage != null then cfg.cloudImages.${name}.image else null;
              defaultText = literalExpression ''config.nuketown.cloudImages.<name>.image (with nuketown.buildImage), else null'';
              example = "nix:0/nix/store/…-nix-image-nuketown-ada.tar";
              description = ''
                The pod's image. By default the image the flake builds for this
                agent with nix-snapshotter (`cloudImages.<name>`), by its
                `nix:0/nix/store/…` reference; any other image reference works
                too (it needs /bin/sh and coreutils).
              '';
            };
          };
        });
      };
    };
  });

  # A shared directory: a path and its members with their access.
  sharedDirModule = types.submodule {
    options = {
      path = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Where the directory lives (default: `<persistDir>/shared/<name>`): outside every home and persist dir, under directories only root can change.";
        example = "/srv/shared/review";
      };
      members = mkOption {
        type = types.attrsOf (types.enum [ "rw" "ro" ]);
        default = { };
        description = "Who shares it — agents and humans of the town — and how: `rw` (read and write) or `ro` (read only). Nobody else can read it.";
        example = { ada = "rw"; vox = "ro"; josh = "rw"; };
      };
      gid = mkOption {
        type = types.nullOr types.int;
        default = null;
        description = "The gid of group `shared-<name>`. Set it with impermanence (or whenever /var/lib/nixos is not kept): files inside record the gid, which must not change across reboots.";
        example = 31200;
      };
    };
  };
  sharedPath = name: d: if d.path != null then d.path else "${cfg.persistDir}/shared/${name}";
  humans = unique (optional (cfg.humanUser != null) cfg.humanUser ++ approvers);
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

  # Assertions about one agent.
  agentAssertions = name:
    let
      a = agents.${name};
      key = "nuketown.agents.${name}";
      absolute = what: p: [
        { assertion = lib.hasPrefix "/" p; message = "${key}.${what}: \"${p}\" must be an absolute path to the file (with sops-nix: config.sops.secrets.\"${name}/…\".path)."; }
        { assertion = !(lib.hasPrefix builtins.storeDir p); message = "${key}.${what}: \"${p}\" is in the Nix store, which every user can read; keep secrets outside it (sops-nix, /run/keys, …)."; }
      ];
    in
    map (p: { assertion = !(lib.hasPrefix "/" p) && !(lib.hasInfix ".." p); message = "${key}.persist: \"${p}\" must be relative to the home and stay inside it."; })
      (a.persist.directories ++ a.persist.files)
    ++ map (g: { assertion = !(builtins.elem g [ "wheel" "sudo" "root" "adm" ]); message = "${key}.devices: group ${g} would give root without a human; use plugdev or dialout."; })
      (map (d: d.group) a.devices)
    ++ map (r: { assertion = (r.cidr == null) != (r.host == null); message = "${key}.network.egress: each rule names one destination, cidr or host."; }) (egressRules a)
    ++ map (r: { assertion = r.host == null; message = "${key}.network.egress: host \"${toString r.host}\" cannot be enforced on NixOS (the rules are built without DNS); write its addresses as cidr, or let the agent ask (`nuketown ask network`)."; }) (egressRules a)
    ++ lib.optionals (a.secrets.sshKey != null) (absolute "secrets.sshKey" a.secrets.sshKey)
    ++ lib.optionals (a.secrets.gpgKey != null) (absolute "secrets.gpgKey" a.secrets.gpgKey)
    ++ concatMap
      (sname:
        let s = a.secrets.extraSecrets.${sname}; in
        if s.source != null then absolute "secrets.extraSecrets.${sname}.source" s.source
        else [{ assertion = hasSops; message = "${key}.secrets.extraSecrets.${sname} has no source: import sops-nix (nuketown.nixosModules.default does) to install the sops secret \"${sopsName name sname}\", or set its source."; }])
      (attrNames a.secrets.extraSecrets)
    ++ lib.optional (a.claudeCode.enable && a.claudeCode.package != null) {
      assertion = (builtins.tryEval a.claudeCode.package.drvPath).success;
      message = ''
        ${key}.claudeCode: the package ${a.claudeCode.package.name or "claude-code"} cannot be used: nixpkgs' claude-code is unfree.
        Allow it, e.g. nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "claude-code" ];
        or set ${key}.claudeCode.package = null to install Claude Code another way.'';
    };
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
    buildImage = mkOption {
      type = types.nullOr (types.functionTo types.package);
      default = null;
      defaultText = literalExpression "nix-snapshotter's buildImage (nuketown.nixosModules set it), else null";
      description = ''
        nix-snapshotter's `buildImage`, with which `cloudImages` builds each
        cloud agent's image. The flake's modules set it from their
        nix-snapshotter input; null: declare `agents.<name>.cloud.image`
        yourself.
      '';
    };
    cloudImages = mkOption {
      type = types.lazyAttrsOf types.package;
      readOnly = true;
      default = if cfg.buildImage == null then { }
        else import ../lib/images.nix { inherit pkgs; inherit (cfg) buildImage; town = cfg; };
      defaultText = literalExpression "one image per agent with cloud.enable (nix/lib/images.nix)";
      description = ''
        Each cloud agent's image, built with `buildImage` (resolvedByNix):
        its shell, coreutils, git, ssh, sops with `cloud.secrets = "sops-kms"`,
        `basePackages` and the agent's `packages`. Build one with
        `nix build .#nixosConfigurations.<host>.config.nuketown.cloudImages.<agent>`
        and push its closure to the binary cache your nodes use.
      '';
    };
    sopsFile = mkOption { type = types.nullOr types.path; default = null; description = "sops file holding the agents' extra secrets (default: sops.defaultSopsFile)."; };
    basePackages = mkOption { type = types.listOf types.package; default = [ ]; description = "Packages every agent gets."; example = literalExpression "[ pkgs.git pkgs.ripgrep ]"; };
    projectDirs = mkOption { type = types.listOf types.str; default = [ "~/dev" ]; description = "Where projects are looked for (`~` is each user's home)."; };
    humanUser = mkOption { type = types.nullOr types.str; default = null; description = "The human: approver and portal owner."; example = "josh"; };
    humanName = mkOption { type = types.nullOr types.str; default = null; description = "The human's full name."; };
    humanEmail = mkOption { type = types.nullOr types.str; default = null; description = "The human's e-mail address."; };
    humanAsAgents = mkOption {
      type = types.bool;
      default = true;
      description = "Let `humanUser` run commands as the agents — never as root — without a password (`sudo -u ada -i`); `nuketown portal` run by the human uses it for the agent's pane.";
    };
    hall = {
      approvers = mkOption { type = types.listOf types.str; default = [ ]; description = "Who may approve escalations (default: humanUser)."; };
      elevatePath = mkOption {
        type = types.str;
        default = "${cfg.package}/bin/nuketown-elevate";
        defaultText = literalExpression ''"''${config.nuketown.package}/bin/nuketown-elevate"'';
        description = "The root entry point the sudoers rule names.";
      };
      matrix = {
        enable = mkEnableOption "approvals in a Matrix room (`nuketown approvals matrix`)";
        homeserver = mkOption { type = types.nullOr types.str; default = null; description = "Homeserver URL."; };
        userId = mkOption { type = types.nullOr types.str; default = null; description = "The hall's own Matrix account, e.g. `@hall:example.org`."; };
        passwordFile = mkOption { type = types.nullOr types.str; default = null; description = "File holding that account's password."; };
        room = mkOption { type = types.nullOr types.str; default = null; description = "The approval room (id or alias)."; };
        approvers = mkOption { type = types.listOf types.str; default = [ ]; description = "Matrix ids whose replies and reactions decide."; };
      };
    };
    rebuild = {
      command = mkOption { type = types.listOf types.str; default = [ "nixos-rebuild" ]; description = "The rebuild program; the action is appended."; };
      configRepo = mkOption { type = types.nullOr types.str; default = null; description = "The configuration repository summarised before a rebuild."; };
    };
    # Rooms (docs/chat.md#rooms), kept by the hall's Matrix account (hall.matrix).
    rooms = mkOption {
      default = { };
      description = "Matrix rooms the hall's account keeps (`nuketown rooms`): created invite-only or adopted, declared members invited, anyone else removed. The name is the alias's local part.";
      example = literalExpression ''{ team = { topic = "ada and vox"; humans = [ "@josh:example.org" ]; agents = [ "ada" "vox" ]; agentsAnswerAgents = true; }; }'';
      type = types.attrsOf (types.submodule {
        options = {
          alias = mkOption { type = types.nullOr types.str; default = null; description = "The room's alias (default `#<name>:<server of hall.matrix.userId>`)."; };
          topic = mkOption { type = types.str; default = ""; description = "The room's topic."; };
          humans = mkOption { type = types.listOf types.str; default = [ ]; description = "Matrix ids of the humans in the room; its agents answer them there."; };
          agents = mkOption { type = types.listOf types.str; default = [ ]; description = "Agents (with chat.enable) in the room."; };
          agentsAnswerAgents = mkOption { type = types.bool; default = false; description = "Whether an agent answers another agent that addresses it (a mention, or a reply to its message)."; };
          agentTurns = mkOption { type = types.ints.between 1 100; default = 4; description = "Most agent messages in a row, without a human's in between, that agents answer; then they stop and say so."; };
          encrypted = mkOption { type = types.bool; default = true; description = "Create the room end-to-end encrypted."; };
        };
      });
    };
    agents = mkOption { type = types.attrsOf agentModule; default = { }; description = "The agents, by Unix user name."; };
    sharedDirs = mkOption {
      type = types.attrsOf sharedDirModule;
      default = { };
      description = ''
        Directories shared by some agents and humans, by name: each gets the
        group `shared-<name>`, mode 2770 (setgid), and access and default
        ACLs naming each member, so every file made inside stays shared with
        exactly the members. `getfacl` on it tells who can talk to whom.
      '';
      example = literalExpression ''{ review.members = { ada = "rw"; vox = "ro"; josh = "rw"; }; }'';
    };
    sudoShim = mkOption {
      type = types.package;
      readOnly = true;
      default = sudoShim;
      defaultText = literalExpression "a `sudo` that runs the entry point";
      description = ''
        The agents' `sudo` (it asks the town hall). The module puts it first on
        every agent's login PATH and on the PATH of the agents' chat bridges;
        put it first on the PATH of other agent services you write
        (`path = [ config.nuketown.sudoShim ]`).
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        let uids = map (a: a.uid) (attrValues agents);
        in [
          { assertion = hasHomeManager; message = "nuketown needs home-manager's NixOS module (it lays down the agents' homes): import nuketown.nixosModules.default, or home-manager.nixosModules.home-manager beside nuketown.nixosModules.nuketown."; }
          { assertion = builtins.length uids == builtins.length (unique uids); message = "nuketown.agents: two agents share a uid; give each agent its own uid (1100, 1101, …)."; }
          { assertion = sudoAgents == { } || approvers != [ ]; message = "nuketown: an agent has sudo.enable but nobody can approve; set nuketown.humanUser."; }
          { assertion = sudoAgents == { } || config.security.sudo.enable || config.security.sudo-rs.enable; message = "nuketown: an agent has sudo.enable but neither security.sudo nor security.sudo-rs is enabled; the agent's sudo needs one of them."; }
          { assertion = !(lib.hasPrefix cfg.agentsDir cfg.persistDir) && !(lib.hasPrefix cfg.persistDir cfg.agentsDir); message = "nuketown.persistDir and nuketown.agentsDir must not contain each other: a round levels agentsDir."; }
          { assertion = cfg.humanUser == null || !(agents ? ${cfg.humanUser}); message = "nuketown.humanUser must not also be an agent."; }
          {
            # The rooms keeper gets the hall's password from systemd (LoadCredential).
            assertion = cfg.rooms == { } || (cfg.hall.matrix.passwordFile != null && lib.hasPrefix "/" cfg.hall.matrix.passwordFile && builtins.match ".*[[:space:]].*" cfg.hall.matrix.passwordFile == null);
            message = "nuketown.hall.matrix.passwordFile: the hall's Matrix account keeps the declared rooms (nuketown.rooms); set the file holding its password, an absolute path without spaces (systemd hands it to the rooms keeper), e.g. \"/run/secrets/hall-matrix\".";
          }
          { assertion = cfg.btrfsDevice == null || lib.hasPrefix "/dev/" cfg.btrfsDevice; message = "nuketown.btrfsDevice: \"${toString cfg.btrfsDevice}\" must be a device path such as /dev/disk/by-uuid/…"; }
          {
            # impermanence keeps a home's persisted paths at persistDir + home + path;
            # nuketown (reset, apply) at persistDir/agents/<name>/path. They agree for /agents only.
            assertion = !hasPersistence || persistingAgents == { } || cfg.agentsDir == "/agents";
            message = "nuketown.agentsDir is \"${cfg.agentsDir}\": with impermanence, persisted paths live at persistDir + home, which is persistDir/agents/<name> (where nuketown reset binds them) only with agentsDir = \"/agents\".";
          }
        ] ++ concatMap (name: let a = cfg.agents.${name}; key = "nuketown.agents.${name}"; in [
          { assertion = !(a.enable && !a.host.enable && !(a.cloud.enable or false)); message = "${key}.host.enable is false and cloud.enable is not set: the agent would run nowhere; set cloud.enable = true to run it in the cluster only, or enable = false to remove it."; }
          # A cloud-only agent's bridge runs in its pod, as the pod's command.
          { assertion = !(a.enable && !a.host.enable && (a.chat.enable or false) && (a.cloud.command or [ ]) != [ ]); message = "${key}.cloud.command: a cloud-only agent with chat.enable runs its chat bridge as the pod's command (the bridge starts the backend for each message); remove cloud.command, or turn chat off to run your own command."; }
        ]) (attrNames cfg.agents)
        ++ concatMap agentAssertions (attrNames agents)
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

      environment.etc."nuketown/town.json".source = townJson;
      environment.systemPackages = [ cfg.package ];

      # Fixed gids: impermanence warns about groups without one (their gid
      # could change across reboots when /var/lib/nixos is not persisted).
      # mkDefault: a gid set elsewhere (e.g. another module's plugdev) wins.
      users.groups = {
        nuketown-approvers = { gid = lib.mkDefault 31100; members = approvers; };
      } // mapAttrs (_: a: { gid = a.uid; }) agents
      // mapAttrs' (name: d: nameValuePair "shared-${name}" ({ members = attrNames d.members; } // optionalAttrs (d.gid != null) { inherit (d) gid; })) cfg.sharedDirs
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

      # Root only through the town hall: the agent may run exactly the entry
      # point, without a password, with no environment of its choosing. The
      # rule goes to whichever sudo the machine uses.
      security.sudo = mkIf (config.security.sudo.enable && sudoAgents != { }) {
        extraRules = [{
          users = attrNames sudoAgents;
          runAs = "root";
          commands = [{ command = elevate; options = [ "NOPASSWD" ]; }];
        }];
        extraConfig = ''
          Defaults!${elevate} env_reset, !setenv
        '';
      };
      # sudo-rs always resets the environment (env_reset cannot be turned off).
      security.sudo-rs = mkIf (config.security.sudo-rs.enable && sudoAgents != { }) {
        extraRules = [{
          users = attrNames sudoAgents;
          runAs = "root";
          commands = [{ command = elevate; options = [ "NOPASSWD" ]; }];
        }];
        extraConfig = ''
          Defaults!${elevate} !setenv
        '';
      };

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

      # A new round for every agent at boot: after the filesystems, the
      # persist binds and the secrets are there, before home-manager lays the
      # dotfiles into the new homes and before anyone logs in.
      systemd.services.nuketown-reset = {
        description = "Nuketown: a new round for every agent";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" "systemd-tmpfiles-setup.service" ]
          ++ optional (hasSops && config.sops.useSystemdActivation) "sops-install-secrets.service";
        before = [ "nuketown-hall.service" "systemd-user-sessions.service" ]
          ++ concatMap (name: [ "home-manager-${utils.escapeSystemdPath name}.service" "nuketown-chat-${name}.service" ]) (attrNames agents);
        # A switch must not level the homes of working agents: rounds at
        # runtime are `nuketown reset`, on purpose.
        restartIfChanged = false;
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
        (attrNames agents)
        ++ concatMap (name: sharedTmpfiles name cfg.sharedDirs.${name}) (attrNames cfg.sharedDirs);
    }

    {
      # Each agent with chat: its Matrix bridge, run as the agent. An agent
      # with sudo keeps the ability to ask (no NoNewPrivileges) and finds the
      # shim first on its PATH.
      systemd.services = mapAttrs'
        (name: a: nameValuePair "nuketown-chat-${name}" {
          description = "Nuketown: ${name}'s Matrix bridge";
          wantedBy = [ "multi-user.target" ];
          wants = [ "network-online.target" ];
          after = [ "network-online.target" "nuketown-reset.service" ];
          restartTriggers = [ townJson ];
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

    (let
      # The human acts as the agents (humanAsAgents): any command as them, never as root.
      rule = [{
        users = [ cfg.humanUser ];
        runAs = concatStringsSep "," (attrNames agents);
        commands = [{ command = "ALL"; options = [ "NOPASSWD" ]; }];
      }];
      grant = cfg.humanAsAgents && cfg.humanUser != null && agents != { };
    in {
      security.sudo = mkIf (grant && config.security.sudo.enable) { extraRules = rule; };
      security.sudo-rs = mkIf (grant && config.security.sudo-rs.enable) { extraRules = rule; };
    })

    (mkIf (cfg.rooms != { }) {
      # The declared rooms, kept as declared by the hall's Matrix account;
      # not as root: a user of its own (DynamicUser) that gets the
      # account's password as a credential systemd reads for it.
      systemd.services.nuketown-rooms = {
        description = "Nuketown: the town's Matrix rooms, kept as declared";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        restartTriggers = [ townJson ];
        serviceConfig = {
          ExecStart = "${nuketown} rooms --watch --town /etc/nuketown/town.json --store /var/lib/nuketown-rooms --password-file %d/hall-matrix";
          DynamicUser = true;
          LoadCredential = [ "hall-matrix:${toString cfg.hall.matrix.passwordFile}" ];
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
    })

    (mkIf (restrictedAgents != { }) {
      # What each agent may reach, by uid; the human and root are never matched.
      networking.nftables.enable = true;
      networking.nftables.tables.nuketown = { family = "inet"; content = nftContent; };
    })

    (mkIf (cfg.btrfsDevice != null) {
      # Needed for boot: impermanence binds persisted paths into the homes
      # from the initrd on, so the filesystem holding them must be mounted there.
      fileSystems.${cfg.agentsDir} = { device = cfg.btrfsDevice; fsType = "btrfs"; options = [ "subvol=agents" ]; neededForBoot = true; };
      boot.initrd.supportedFilesystems.btrfs = true;
    })
    (mkIf (cfg.btrfsDevice != null && !config.boot.initrd.systemd.enable) {
      # Scripted stage 1: after the devices appear, before filesystems mount.
      boot.initrd.postDeviceCommands = lib.mkAfter rollback;
    })
    (mkIf (cfg.btrfsDevice != null && config.boot.initrd.systemd.enable) {
      # systemd stage 1 (which refuses postDeviceCommands): a unit between
      # the device and the homes' mount.
      boot.initrd.systemd.services.nuketown-rollback =
        let device = "${utils.escapeSystemdPath cfg.btrfsDevice}.device"; in
        {
          description = "Nuketown: a new, empty home for every agent";
          wantedBy = [ "initrd.target" ];
          requires = [ device ];
          after = [ device ];
          before = [ "${utils.escapeSystemdPath "/sysroot${cfg.agentsDir}"}.mount" ];
          unitConfig.DefaultDependencies = false;
          serviceConfig.Type = "oneshot";
          script = rollback;
        };
    })

    (optionalAttrs hasHomeManager {
      home-manager.users = mapAttrs
        (name: a: { config, ... }: {
          imports = [ a.extraHomeConfig ];
          home.stateVersion = lib.mkDefault systemStateVersion;
          home.packages = cfg.basePackages ++ a.packages;
          home.sessionVariables.NUKETOWN_AGENT = name;
          # The agent's keys are the town's: ssh, git push and git signing use them through the hall.
          home.sessionVariables.SSH_AUTH_SOCK = "/run/nuketown/ssh/${name}/agent.sock";
          home.sessionPath = optional a.sudo.enable "${sudoShim}/bin";
          home.file =
            mapAttrs' (path: _: nameValuePair path { source = "${renderedHome name}/${path}"; })
              (lib.genAttrs ([
                ".config/nuketown/identity.toml"
                ".claude/CLAUDE.md"
                ".claude/agents/${if a.claudeCode.agentName != null then a.claudeCode.agentName else name}.md"
                "AGENTS.md"
                ".codex/AGENTS.md"
              ] ++ optionals a.claudeCode.enable (map (n: ".claude/agents/${n}.md") (attrNames a.claudeCode.extraAgents))) (_: null))
            # Secrets stay where they are installed (outside the levelled
            # home); the home gets a link, laid again after every round.
            // lib.mapAttrs' (sname: s: nameValuePair s.path {
              source = config.lib.file.mkOutOfStoreSymlink (secretSource name sname s);
            }) a.secrets.extraSecrets;
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
    (optionalAttrs hasHomeManager {
      # home-manager lays the dotfiles into the new homes the boot round made.
      systemd.services = mkIf (!config.home-manager.startAsUserService) (mapAttrs'
        (name: _: nameValuePair "home-manager-${utils.escapeSystemdPath name}" {
          after = [ "nuketown-reset.service" ];
          wants = [ "nuketown-reset.service" ];
        })
        agents);
    })

    (optionalAttrs hasSops {
      sops.secrets = builtins.listToAttrs (concatMap
        (name:
          lib.mapAttrsToList
            (sname: s: nameValuePair (sopsName name sname) ({
              owner = name;
              inherit (s) mode;
            } // optionalAttrs (cfg.sopsFile != null) { sopsFile = cfg.sopsFile; }))
            (sopsSecretsOf agents.${name}))
        (attrNames agents));
    })

    (optionalAttrs hasPersistence {
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
