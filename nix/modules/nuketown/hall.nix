# The town hall: the daemon that brokers every escalation (socket-activated),
# the sudo rules that make it the agents' only way to root, the boot round
# (`nuketown reset --all`), and the agents' egress rules in nftables.
{ config, lib, pkgs, options, utils, ... }@args:

let
  inherit (lib) mkIf mkMerge attrNames attrValues filterAttrs concatMap concatStringsSep optional;
  c = import ./common.nix args;
  inherit (c) cfg agents sudoAgents elevate nuketown;

  gw = cfg.hall.gateway;
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
  # DNS only to the agent's resolvers (port 53 elsewhere is any server's):
  # its own `network.dns`, else the host's declared nameservers, else
  # systemd-resolved's stub when it runs.
  hostResolvers =
    if config.networking.nameservers or [ ] != [ ] then config.networking.nameservers
    else if config.services.resolved.enable or false then [ "127.0.0.53" ]
    else [ ];
  dnsOf = a: if a.network.dns != null then a.network.dns else hostResolvers;
  dnsRule = a: addr:
    let family = if lib.hasInfix ":" addr then "ip6" else "ip";
    in "meta skuid ${toString a.uid} ${family} daddr ${addr} meta l4proto { tcp, udp } th dport 53 accept";
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
      ct direction reply accept
      meta l4proto { tcp, udp } meta skuid . ip daddr . th dport @grants4 accept
      meta l4proto { tcp, udp } meta skuid . ip6 daddr . th dport @grants6 accept
      ${concatStringsSep "\n  " (concatMap (a: map (dnsRule a) (dnsOf a)) (attrValues restrictedAgents))}
      ${concatStringsSep "\n  " (concatMap (a: map (nftRule a) (builtins.filter (r: r.cidr != null) (egressRules a))) (attrValues restrictedAgents))}
      reject with icmpx type admin-prohibited
    }
  '';

  # Root only through the town hall: the agent may run exactly the entry
  # point, without a password, with no environment of its choosing. No
  # alias is defined (nothing to collide with the machine's own sudoers);
  # NixOS checks the whole sudoers file with visudo when it builds it.
  agentRule = [{
    users = attrNames sudoAgents;
    runAs = "root";
    commands = [{ command = elevate; options = [ "NOPASSWD" ]; }];
  }];
  # The human acts as the agents (humanAsAgents): any command as them, never as root.
  humanRule = [{
    users = [ cfg.humanUser ];
    runAs = concatStringsSep "," (attrNames agents);
    commands = [{ command = "ALL"; options = [ "NOPASSWD" ]; }];
  }];
  grant = cfg.humanAsAgents && cfg.humanUser != null && agents != { };
  rules = lib.optionals (sudoAgents != { }) agentRule ++ lib.optionals grant humanRule;
in
{
  config = mkIf cfg.enable (mkMerge [
    {
      warnings = concatMap (name:
        lib.optional (dnsOf agents.${name} == [ ])
          "nuketown.agents.${name}.network.egress is restricted and no DNS server is known (networking.nameservers is empty and systemd-resolved is off): ${name} may ask no DNS server; set networking.nameservers or nuketown.agents.${name}.network.dns."
      ) (attrNames restrictedAgents);
      assertions = concatMap (name:
        lib.imap0 (i: r: {
          assertion = !(r.prefix && r.extra == null);
          message = "nuketown.agents.${name}.sudo.autoApprove[${toString i}]: an autoApprove rule no longer approves whatever follows its argv; say what may follow: extra = { words = [ \"nginx\" ]; } or extra = { pattern = \"[a-z0-9@._-]+\"; }.";
        }) agents.${name}.sudo.autoApprove
      ) (attrNames agents) ++ [
        { assertion = sudoAgents == { } || config.security.sudo.enable || config.security.sudo-rs.enable; message = "nuketown: an agent has sudo.enable but neither security.sudo nor security.sudo-rs is enabled; the agent's sudo needs one of them."; }
        {
          # The agents' sudo is the package's nuketown-sudo, which runs the entry point beside it.
          assertion = sudoAgents == { } || elevate == "${cfg.package}/bin/nuketown-elevate";
          message = "nuketown.hall.elevatePath is \"${elevate}\", but the agents' sudo (the package's nuketown-sudo) runs the entry point beside it, ${cfg.package}/bin/nuketown-elevate, which sudoers would then refuse; leave hall.elevatePath at its default.";
        }
      ];

      users.groups.nuketown-approvers = { gid = lib.mkDefault 31100; members = c.approvers; };

      security.sudo = mkIf (config.security.sudo.enable && (sudoAgents != { } || grant)) {
        extraRules = rules;
        extraConfig = lib.optionalString (sudoAgents != { }) ''
          Defaults!${elevate} env_reset, !setenv
        '' + lib.optionalString grant ''
          Defaults>${concatStringsSep ", " (attrNames agents)} use_pty
        '';
      };
      # sudo-rs always resets the environment (env_reset cannot be turned off).
      security.sudo-rs = mkIf (config.security.sudo-rs.enable && (sudoAgents != { } || grant)) {
        extraRules = rules;
        extraConfig = lib.optionalString (sudoAgents != { }) ''
          Defaults!${elevate} !setenv
        '';
      };

      # The hall runs as root without sandboxing on purpose: it starts the
      # credential gateway as `hall.gateway.user` (setuid/setgid: no
      # CapabilityBoundingSet without CAP_SETUID and CAP_SETGID) and makes
      # `hall.gateway.runDir` (/run/nuketown/gateway, inside its
      # RuntimeDirectory). A credential's `systemdCredential` is read from
      # $CREDENTIALS_DIRECTORY: the user hands it over with
      # `serviceConfig.LoadCredential` (or LoadCredentialEncrypted) here.
      systemd.services.nuketown-hall = {
        description = "Nuketown town hall: human approval of agent escalations";
        wantedBy = [ "multi-user.target" ];
        after = [ "nuketown-reset.service" ];
        restartTriggers = [ c.townJson ];
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
      # dotfiles into the new homes and before anyone logs in. It also
      # republishes the allowed signers the humans' git verifies with.
      systemd.services.nuketown-reset = {
        description = "Nuketown: a new round for every agent";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" "systemd-tmpfiles-setup.service" ]
          ++ optional (c.hasSops && config.sops.useSystemdActivation) "sops-install-secrets.service";
        before = [ "nuketown-hall.service" "systemd-user-sessions.service" ]
          ++ concatMap (name: [ "home-manager-${utils.escapeSystemdPath name}.service" "nuketown-chat-${name}.service" ]) (attrNames agents);
        # A switch must not level the homes of working agents: rounds at
        # runtime are `nuketown reset`, on purpose.
        restartIfChanged = false;
        unitConfig.DefaultDependencies = false;
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; ExecStart = "${nuketown} reset --all --town /etc/nuketown/town.json"; };
      };
    }

    (mkIf (c.gatewayAgents != { }) {
      assertions = [{
        assertion = gw.user != "root" && !(cfg.agents ? ${gw.user}) && !(builtins.elem gw.user c.humans);
        message = "nuketown.hall.gateway.user is \"${gw.user}\": the credential gateway runs as a system user of its own (never root, an agent or a human), e.g. \"nuketown-gateway\".";
      }];
      # The gateway's own user, which the hall starts it as. Fixed ids
      # (mkDefault) for the same reason as the groups': impermanence warns
      # about users without one.
      users.users.${gw.user} = {
        isSystemUser = true;
        group = gw.user;
        uid = lib.mkDefault 31102;
        description = "nuketown credential gateway";
      };
      users.groups.${gw.user}.gid = lib.mkDefault 31102;
    })

    (mkIf (restrictedAgents != { }) {
      # What each agent may reach, by uid; the human and root are never matched.
      networking.nftables.enable = true;
      networking.nftables.tables.nuketown = { family = "inet"; content = nftContent; };
    })
  ]);
}
