# The options of nuketown's NixOS module: exactly the Town schema
# (docs/schema.md), with the module guide's short forms accepted as
# shorthand for the long ones (a list for `persist`, a sops secret's name
# for a key or an extra secret, a bare UUID for `btrfsDevice`, seconds for
# `idleTimeout`, command lines for `sudo.commands`).
{ config, lib, pkgs, options, ... }@args:

let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  c = import ./common.nix args;
  inherit (c) cfg;

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

  # A command line as sudoers writes it: the program alone allows any
  # arguments, with arguments exactly those.
  commandLine = line:
    let argv = builtins.filter (w: builtins.isString w && w != "") (builtins.split "[[:space:]]+" line);
    in { inherit argv; prefix = builtins.length argv == 1; extra = null; };

  tier = types.enum [ "small" "standard" "large" "gpu" ];
  # A duration as the schema writes it; an integer is seconds (the module guide's form).
  idleTimeout = default: mkOption {
    type = types.nullOr (types.either types.ints.positive types.str);
    inherit default;
    apply = v: if builtins.isInt v then "${toString v}s" else v;
    example = 3600;
    description = "After this long idle, back to the declared tier without approval: a duration (`\"1h\"`) or seconds (`3600`).";
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
        description = ''
          Match `argv` as a prefix. In `deny` and `commands`: whatever follows.
          In `autoApprove` only with `extra`, which names what may follow.
        '';
      };
      extra = mkOption {
        type = types.nullOr (types.submodule {
          options = {
            words = mkOption { type = types.listOf types.str; default = [ ]; example = [ "nginx" "postgresql" ]; description = "Arguments allowed word for word."; };
            pattern = mkOption { type = types.nullOr types.str; default = null; example = "[a-z0-9@._-]+"; description = "A regular expression an argument must match whole (no shell metacharacters: the town refuses a pattern that admits them)."; };
            max = mkOption { type = types.ints.between 1 64; default = 1; description = "Most arguments after `argv`."; };
          };
        });
        default = null;
        example = literalExpression ''{ words = [ "nginx" ]; }'';
        description = ''
          What may follow `argv`: each further argument one of `words` or a
          whole match of `pattern`, at most `max` of them. Even then a rule
          approves only what the hall proves root's (docs/security.md).
        '';
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
          Where the secret comes from: the absolute path of a file, or the
          name of a sops secret (`"ada/gh-token"`, in `sopsFile`), which
          sops-nix installs under /run/secrets owned by the agent. Null is the
          sops secret `<agent>/<name>`. town.json records the path.
        '';
        example = "ada/gh-token";
      };
      path = mkOption { type = types.nullOr types.str; default = null; description = "Where the secret appears, relative to the home (a link to the source); null leaves it at its source (/run/secrets/… for a sops secret)."; example = ".config/gh/hosts.yml"; };
      mode = mkOption { type = types.strMatching "[0-7]{3,4}"; default = "0400"; description = "Octal file mode (of the sops secret)."; };
      gateway = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          Hand the secret to the town's credential gateway instead, as a
          credential of this API (`"anthropic"`, `"openai"` or `"github"`)
          named as this entry: the agent never reads it again. Its sops secret
          becomes root's (0400), home-manager no longer links it into the
          home (`path` only says where an old copy is removed), the boot
          round seals it into the town's key store, and the agent's tools
          reach the API through the gateway (home-manager's session
          variables: `ANTHROPIC_BASE_URL`, … ). An `http` credential needs
          hosts and a header: declare it in `agents.<name>.credentials`.
        '';
        example = "anthropic";
      };
    };
  };

  # A credential the agent uses through the town's gateway and never holds
  # (crates/town/src/schema.rs, Credential).
  credential = types.submodule {
    options = {
      source = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          Where the secret comes from: the name of a sops secret
          (`"ada/anthropic-key"`, in `sopsFile`), which the module declares
          for sops-nix owned by root (0400), never by the agent; or the
          absolute path of a file only root reads. town.json records the
          path; the boot round (`nuketown reset --all`) and `nuketown reset
          <agent>` seal it into the town's key store, where only the gateway
          uses it; the town hall also seals it itself whenever the file
          differs from the sealed copy, so a switch that adds or changes one
          needs no round. Set this or `systemdCredential`.
        '';
        example = "ada/anthropic-key";
      };
      systemdCredential = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          Or the name of a systemd credential handed to the town hall, which
          reads `$CREDENTIALS_DIRECTORY/<name>` when it starts and seals it.
          Hand it over yourself:
          `systemd.services.nuketown-hall.serviceConfig.LoadCredential = [ "<name>:/path/to/secret" ];`
          (or `LoadCredentialEncrypted`, for `systemd-creds encrypt`ed files).
        '';
        example = "ada-anthropic";
      };
      api = mkOption {
        type = types.enum [ "anthropic" "openai" "github" "http" ];
        description = ''
          What it is for: `anthropic`, `openai` (model APIs, reached at the
          gateway's `http://127.0.0.1:<port>/<name>`), `github` (git over
          HTTPS and the API, through the gateway's HTTPS proxy) or `http`
          (any HTTPS API: `hosts` and `header`).
        '';
        example = "anthropic";
      };
      upstream = mkOption { type = types.nullOr types.str; default = null; description = "A model API's base URL (default: the provider's own); https, or http to this machine's loopback."; example = "https://llm-proxy.example.org"; };
      hosts = mkOption { type = types.listOf types.str; default = [ ]; description = "For `github` and `http`: the hosts (`host` or `host:port`) whose requests get the credential (`github`: github.com and api.github.com unless written)."; example = [ "api.example.com" ]; };
      paths = mkOption { type = types.listOf types.str; default = [ ]; description = "The request paths it may be used for, as prefixes; empty: any."; example = [ "/v1/messages" ]; };
      models = mkOption { type = types.listOf types.str; default = [ ]; description = "For model APIs: the models it may be used with (`*` matches any text); empty: any."; example = [ "claude-sonnet-*" ]; };
      header = mkOption { type = types.nullOr types.str; default = null; description = "For `http`: the header that carries it."; example = "Authorization"; };
      scheme = mkOption { type = types.nullOr types.str; default = null; description = "The word before it in the header: `Bearer` unless written for `http`; `\"\"`: the secret alone."; example = "Bearer"; };
      limits = {
        requestsPerHour = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Most requests in any hour; null: no limit."; example = 200; };
        requestsPerDay = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Most requests in any day; null: no limit."; };
        tokensPerHour = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Most tokens (in and out, as the API reports them) in any hour; null: no limit."; };
        tokensPerDay = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Most tokens in any day; null: no limit."; example = 2000000; };
      };
      onLimit = mkOption {
        type = types.enum [ "deny" "ask" ];
        default = "deny";
        description = "At a limit: `deny` (the agent's CLI shows the gateway's error) or `ask` (denied now, and a human is asked for one more window's worth).";
      };
      upstreamCa = mkOption { type = types.nullOr types.str; default = null; description = "The absolute path of a CA (PEM file) trusted for this upstream besides the system's; public, so the store is fine."; example = literalExpression ''"''${./forge-ca.pem}"''; };
    };
  };

  keyPath = what: sops: mkOption {
    type = types.nullOr types.str;
    default = null;
    description = ''
      The ${what}: the name of a sops secret in `sopsFile` (the module
      declares it for sops-nix, readable by root alone), or the absolute path
      of its file. ${if sops == "ssh-key" then ''
      `nuketown apply` and `nuketown reset` import it into the town's sealed
      key store (when it changed); it is never placed in the home: the
      agent uses it through its ssh-agent socket.'' else ''
      `nuketown reset` imports it into the agent's keyring every round, and
      its public half into the humans' keyrings; the agent's commits are
      then GPG-signed.''}
    '';
    example = "ada/${sops}";
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
      packages = mkOption { type = types.listOf types.package; default = [ ]; description = "Packages for this agent, beside `basePackages`."; example = literalExpression "[ pkgs.cargo pkgs.rustc ]"; };
      extraHomeConfig = mkOption { type = types.deferredModule; default = { }; description = "Extra home-manager configuration for the agent, merged last."; };
      persist = mkOption {
        default = { };
        description = "Home paths kept across rounds: `{ directories; files; }`, or a list of directories (the module guide's form).";
        example = [ "projects" ".config/claude" ];
        type = types.coercedTo (types.listOf types.str) (directories: { inherit directories; }) (types.submodule {
          options = {
            directories = mkOption { type = types.listOf types.str; default = [ ]; description = "Home-relative directories kept across rounds."; example = [ "dev" ".local/share/direnv" ]; };
            files = mkOption { type = types.listOf types.str; default = [ ]; description = "Home-relative files kept across rounds."; example = [ ".bash_history" ]; };
          };
        });
      };
      secrets = {
        sshKey = keyPath "private SSH key" "ssh-key";
        gpgKey = keyPath "armored private GPG key" "gpg-key";
        extraSecrets = mkOption {
          type = types.attrsOf (types.coercedTo types.str (source: { inherit source; }) extraSecret);
          default = { };
          description = "Further secrets by name: a sops secret's name (the module guide's form), or `{ source; path; mode; gateway; }`.";
          example = literalExpression ''{ gh = "ada/gh-token"; npm = { path = ".npmrc"; }; }'';
        };
      };
      credentials = mkOption {
        type = types.attrsOf credential;
        default = { };
        description = ''
          Credentials (API keys, tokens) the agent uses through the town's
          gateway and never holds, by name (lowercase letters, digits and
          `-`: the gateway's URL path segment). The town hall runs the
          gateway as `hall.gateway.user` when any agent has one; the agent's
          tools find it through home-manager's session variables
          (`ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL`, `HTTPS_PROXY`, the
          town's CA) with a placeholder key the gateway replaces.
        '';
        example = literalExpression ''
          {
            anthropic = { api = "anthropic"; source = "ada/anthropic-key"; limits.tokensPerDay = 2000000; onLimit = "ask"; };
            gh = { api = "github"; source = "ada/gh-token"; paths = [ "/repos/forge/" ]; };
          }
        '';
      };
      devices = mkOption { type = types.listOf device; default = [ ]; description = "Devices the agent may open (udev ACLs)."; };
      sudo = {
        enable = mkEnableOption "root for this agent, one human-approved command at a time, through the town hall";
        autoApprove = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands approved without asking a human."; };
        deny = mkOption { type = types.listOf commandRule; default = [ ]; description = "Commands denied without asking (deny wins)."; };
        commands = mkOption {
          type = types.listOf (types.coercedTo types.str commandLine commandRule);
          default = [ ];
          description = ''
            The commands the agent may ask for at all; anything else is refused
            without bothering a human. Empty: any command may be asked for. A
            string is a command line as sudoers writes it: the program alone
            allows any arguments (`"systemctl"`), with arguments exactly those
            (`"systemctl restart nginx"`).
          '';
          example = [ "systemctl" "nixos-rebuild switch" ];
        };
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
        publicKey = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = ''
            The agent's public SSH key, when you hold it (the public half of
            `secrets.sshKey`): the town refuses a key store whose key differs,
            and `config.nuketown.authorizedKeys.<name>` offers it to the
            configurations of the machines the agent reaches.
          '';
          example = literalExpression "builtins.readFile ./keys/ada.pub";
        };
      };
      network.dns = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
        example = [ "10.0.0.53" ];
        description = ''
          The DNS servers (addresses) this agent may ask on port 53 when its
          egress is restricted. Default: the host's `networking.nameservers`
          (127.0.0.53 with systemd-resolved); with neither, the agent may ask
          none (evaluation warns).
        '';
      };
      network.egress = mkOption {
        type = types.either (types.enum [ "all" "none" ]) (types.listOf egressRule);
        default = "all";
        example = literalExpression ''[ { cidr = "0.0.0.0/0"; ports = [ 443 ]; } { cidr = "10.20.0.0/16"; ports = [ 22 ]; } ]'';
        description = ''
          Where the agent may connect: `"all"`, `"none"` (its DNS servers,
          `network.dns`, and loopback only) or an allow-list of networks and TCP/UDP ports. Enforced on
          the agent's uid by nftables (`networking.nftables`, table `inet
          nuketown`) and, in a cluster, by the agent's NetworkPolicy. The agent
          asks for more with `nuketown ask network HOST[:PORT] --for 1h`; a
          human approves on any channel.
        '';
      };
      rebuild.enable = mkEnableOption "the rebuild coordinator for this agent (`nuketown rebuild`: build as the agent, switch after a human's approval)";
      portal = {
        enable = mkOption { type = types.bool; default = true; description = "Offer the agent in `nuketown portal`, and put `portal-<name>` (and `portal`) on every user's PATH."; };
        command = mkOption { type = types.nullOr types.str; default = null; description = "What runs in the agent's pane (default: the agent's CLI: `claude` with claudeCode, the chat backend's program with chat, else a login shell)."; };
        layout = mkOption { type = types.strMatching "[0-9]+/[0-9]+"; default = "75/25"; description = "Agent pane / human pane, percent."; };
      };
      claudeCode = {
        enable = mkEnableOption "Claude Code for this agent (home-manager's programs.claude-code with its settings)";
        package = mkOption {
          type = types.nullOr types.package;
          default =
            if pkgs ? unstable && pkgs.unstable ? claude-code then pkgs.unstable.claude-code
            else pkgs.claude-code or null;
          defaultText = literalExpression "pkgs.unstable.claude-code (with an `unstable` overlay), else pkgs.claude-code, else null";
          description = ''
            The Claude Code package (NixOS only): `pkgs.unstable.claude-code`
            when the configuration's pkgs has an `unstable` set, else
            `pkgs.claude-code`. nixpkgs' claude-code is unfree: allow it
            (`nixpkgs.config.allowUnfreePredicate`), or set null to install
            Claude Code another way.
          '';
        };
        settings = mkOption { type = types.attrs; default = { }; description = "Claude Code settings.json."; };
        agentName = mkOption { type = types.nullOr types.str; default = null; defaultText = literalExpression ''"<name>-<role>"''; description = "File name of the agent file under ~/.claude/agents/ (default: `<name>-<role>`, the role's spaces and slashes as `-`)."; };
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
            enable = mkOption {
              type = types.bool;
              default = cfg.cloud.enable;
              defaultText = literalExpression "config.nuketown.cloud.enable";
              description = "Run this agent in the cluster (`nuketown cloud render`; without host.enable, in the cluster only).";
            };
            resources = mkOption { type = types.nullOr tier; default = cfg.cloud.resources; defaultText = literalExpression "config.nuketown.cloud.resources"; description = "Resource tier (null: `standard`)."; };
            namespace = mkOption { type = types.nullOr types.str; default = cfg.cloud.namespace; defaultText = literalExpression "config.nuketown.cloud.namespace"; description = "Namespace (null: `nuketown`)."; };
            scaling = mkOption {
              default = { };
              description = "Scaling as a conversation (docs/scaling.md); defaults from `nuketown.cloud.scaling`.";
              type = types.submodule {
                freeformType = types.attrsOf types.anything;
                options = {
                  maxResources = mkOption { type = types.nullOr tier; default = cfg.cloud.scaling.maxResources; defaultText = literalExpression "config.nuketown.cloud.scaling.maxResources"; description = "The largest tier the agent may be moved to when it asks."; };
                  idleTimeout = idleTimeout cfg.cloud.scaling.idleTimeout;
                };
              };
            };
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
      description = ''
        The btrfs filesystem holding `agentsDir`: a device path, or its bare
        UUID as blkid prints it (the module guide's form, read as
        `/dev/disk/by-uuid/<UUID>`). Enables the boot-time rollback.
      '';
      example = "/dev/disk/by-label/nixos";
    };
    btrfsSubvolume = mkOption {
      type = types.nullOr types.str;
      default = if cfg.btrfsDevice == null then null else if c.isUuid cfg.btrfsDevice then "@agents" else "agents";
      defaultText = literalExpression ''"@agents" for a bare-UUID btrfsDevice (the module guide's layout), else "agents"'';
      description = ''
        The subvolume mounted at `agentsDir`. At boot, when `<subvolume>-blank`
        exists beside it (the module guide's `@agents-blank`), the subvolume is
        restored from that blank snapshot; otherwise every home in it is
        deleted and made anew. Either way each agent then has a new, empty
        home subvolume of its own.
      '';
      example = "@agents";
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
        else import ../../lib/images.nix { inherit pkgs; inherit (cfg) buildImage; town = cfg; };
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
    basePackages = mkOption {
      type = types.listOf types.package;
      default = with pkgs; [ git ripgrep fd jq curl tree ];
      defaultText = literalExpression "with pkgs; [ git ripgrep fd jq curl tree ]";
      description = "Packages every agent gets.";
    };
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
      # The credential gateway, a child of the hall run when an agent has credentials.
      gateway = {
        port = mkOption { type = types.ints.between 1 65535; default = 8399; description = "The gateway's port on 127.0.0.1: model APIs at `/<credential>`, and the HTTPS proxy."; };
        user = mkOption {
          type = types.str;
          default = "nuketown-gateway";
          description = "The system user the hall runs the gateway as (never root, an agent or the human); the module declares it, with a group of the same name, when an agent of this machine has a credential.";
        };
        runDir = mkOption { type = types.str; default = "/run/nuketown/gateway"; description = "Where the hall publishes what the agents' tools read: the town's CA (`ca.pem`, `ca-bundle.pem`), pause markers and usage."; };
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
    cloud = {
      enable = mkEnableOption "every agent in the cluster (the default of `agents.<name>.cloud.enable`)";
      resources = mkOption { type = types.nullOr tier; default = null; description = "The default of every agent's `cloud.resources`."; example = "standard"; };
      namespace = mkOption { type = types.nullOr types.str; default = null; description = "The default of every agent's `cloud.namespace`."; };
      scaling = {
        maxResources = mkOption { type = types.nullOr tier; default = null; description = "The default of every agent's `cloud.scaling.maxResources`."; example = "large"; };
        idleTimeout = idleTimeout null;
      };
    };
    authorizedKeys = mkOption {
      type = types.attrsOf (types.listOf types.str);
      readOnly = true;
      default = lib.mapAttrs (_: a: [ a.keys.publicKey ]) (lib.filterAttrs (_: a: a.enable && a.keys.publicKey != null) cfg.agents);
      defaultText = literalExpression "{ <name> = [ agents.<name>.keys.publicKey ]; } for each agent that declares it";
      description = ''
        Each agent's public SSH key, as far as it is known when the
        configuration is evaluated (`agents.<name>.keys.publicKey`), for the
        machines the agent reaches:
        `users.users.ada.openssh.authorizedKeys.keys = forge.config.nuketown.authorizedKeys.ada;`.
        Keys the town generates are known only at run time: `nuketown keys
        list --authorized-keys` prints them.
      '';
    };
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
      default = c.sudoShim;
      defaultText = literalExpression "`sudo`, a link to the package's nuketown-sudo";
      description = ''
        The agents' `sudo` (it asks the town hall). The module puts it first on
        every agent's login PATH and on the PATH of the agents' chat bridges;
        put it first on the PATH of other agent services you write
        (`path = [ config.nuketown.sudoShim ]`).
      '';
    };
  };
}
