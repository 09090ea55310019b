# What every part of nuketown's NixOS module shares, computed once from the
# configuration: which agents live on this machine, where their keys and
# secrets come from, the town.json every nuketown binary reads, the agents'
# `sudo`. Imported by each part (`import ./common.nix args`), not a module.
{ config, lib, pkgs, options, ... }:

let
  inherit (lib) filterAttrs mapAttrs optional optionalAttrs unique concatMap attrNames;

  cfg = config.nuketown;
  hasSops = options ? sops.secrets;

  # A filesystem UUID as blkid prints it: the module guide's `btrfsDevice`.
  isUuid = s: builtins.match "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}" s != null;
  # A key or secret is a file (an absolute path) or a sops secret (its name).
  isFile = s: lib.hasPrefix "/" s;
in
rec {
  inherit cfg hasSops isUuid isFile;
  hasHomeManager = options ? home-manager.users;
  hasPersistence = options ? environment.persistence;

  # The agents that are users of this machine: enabled and not declared for
  # the cloud only (host.enable). town.json still lists every agent, for the
  # cluster render.
  agents = filterAttrs (_: a: a.enable && a.host.enable) cfg.agents;
  sudoAgents = filterAttrs (_: a: a.sudo.enable) agents;
  approvers = if cfg.hall.approvers != [ ] then cfg.hall.approvers else optional (cfg.humanUser != null) cfg.humanUser;
  humans = unique (optional (cfg.humanUser != null) cfg.humanUser ++ approvers);
  elevate = cfg.hall.elevatePath;
  nuketown = "${cfg.package}/bin/nuketown";
  homeOf = name: "${cfg.agentsDir}/${name}";

  # `btrfsDevice` as a device path, and the subvolume mounted at agentsDir:
  # a bare UUID is the module guide's set-up (`@agents`, restored from
  # `@agents-blank`), a device path the town's own (`agents`).
  btrfsDevice =
    if cfg.btrfsDevice != null && isUuid cfg.btrfsDevice then "/dev/disk/by-uuid/${cfg.btrfsDevice}"
    else cfg.btrfsDevice;

  # The sops secrets the town names, by sops name, each with what sops-nix
  # needs: the agent's keys and the secrets its gateway uses (root's alone:
  # nuketown reads and seals them, never into a home) and its other extra
  # secrets (the agent's own). An extra secret without a source is the
  # sops secret `<agent>/<name>`.
  extraSopsName = agent: sname: s:
    if s.source == null then "${agent}/${sname}"
    else if isFile s.source then null
    else s.source;
  sopsFileOf = optionalAttrs (cfg.sopsFile != null) { sopsFile = lib.mkDefault cfg.sopsFile; };
  # Spelled out, not sops-nix's default: a definition elsewhere giving the
  # secret to someone else conflicts instead of quietly winning.
  rootOnly = { owner = "root"; group = "root"; mode = "0400"; };

  # An agent's credentials at the gateway, as Town::credentials_of has them
  # (crates/town/src/credentials.rs): the declared ones, and its extra
  # secrets with `gateway` set, named as the entry (only `api` is read here).
  credentialsOf = a:
    mapAttrs (_: s: { api = s.gateway; }) (filterAttrs (_: s: s.gateway != null) a.secrets.extraSecrets)
    // a.credentials;
  # The agents of this machine with a credential: the hall runs the gateway for them.
  gatewayAgents = filterAttrs (_: a: credentialsOf a != { }) agents;

  # What the agent's tools need to use the gateway, exactly as
  # Town::gateway_env renders it for `nuketown apply` (the first credential,
  # by name, sets a variable; tested against it in nix_upstream.rs).
  gatewayEnv = name:
    let
      creds = credentialsOf cfg.agents.${name};
      base = "http://127.0.0.1:${toString cfg.hall.gateway.port}";
      run = cfg.hall.gateway.runDir;
      apis = map (cname: creds.${cname}.api) (attrNames creds);
      proxied = lib.any (api: api != "anthropic" && api != "openai") apis;
      forCredential = cname:
        let api = creds.${cname}.api; placeholder = "nuketown-gateway-${cname}"; in
        if api == "anthropic" then { ANTHROPIC_BASE_URL = "${base}/${cname}"; ANTHROPIC_API_KEY = placeholder; }
        else if api == "openai" then { OPENAI_BASE_URL = "${base}/${cname}/v1"; OPENAI_API_BASE = "${base}/${cname}/v1"; OPENAI_API_KEY = placeholder; }
        else if api == "github" then { GH_TOKEN = placeholder; }
        else { };
      proxy = lib.optionalAttrs proxied ({
        HTTPS_PROXY = base; https_proxy = base;
        NO_PROXY = "localhost,127.0.0.1,::1"; no_proxy = "localhost,127.0.0.1,::1";
        NODE_EXTRA_CA_CERTS = "${run}/ca.pem";
      } // lib.genAttrs [ "SSL_CERT_FILE" "GIT_SSL_CAINFO" "REQUESTS_CA_BUNDLE" "CURL_CA_BUNDLE" ] (_: "${run}/ca-bundle.pem"));
    in
    # `//` keeps the right side's: fold from the last credential so the first wins.
    lib.foldr (cname: acc: acc // forCredential cname) { } (attrNames creds) // proxy;
  sopsSecrets = builtins.addErrorContext
    "while nuketown declares the sops secrets its agents name (secrets.sshKey = \"ada/ssh-key\"; a key written as config.sops.secrets.\"…\".path makes this circular: write the sops secret's name instead, nuketown declares it)"
    (builtins.listToAttrs (concatMap
    (name:
      let a = agents.${name}; in
      map (k: lib.nameValuePair k sopsFileOf)
        (builtins.filter (k: k != null && !(isFile k)) [ a.secrets.sshKey a.secrets.gpgKey ])
      ++ concatMap
        (sname:
          let s = a.secrets.extraSecrets.${sname}; n = extraSopsName name sname s; in
          lib.optional (n != null) (lib.nameValuePair n
            ((if s.gateway != null then rootOnly else { owner = name; inherit (s) mode; }) // sopsFileOf)))
        (attrNames a.secrets.extraSecrets)
      ++ concatMap
        (cname:
          let src = a.credentials.${cname}.source; in
          lib.optional (src != null && !(isFile src)) (lib.nameValuePair src (rootOnly // sopsFileOf)))
        (attrNames a.credentials))
    (attrNames agents)));

  # Where a key or secret is on this machine: a file where it is, a sops
  # secret where sops-nix installs it.
  pathOf = n:
    if n == null || isFile n then n
    else if hasSops then config.sops.secrets.${n}.path
    else n;

  # Where an extra secret is here: its file, or its sops secret's path
  # (without sops-nix, as declared: an assertion says what to do).
  sourceOf = agent: sname: s:
    let n = extraSopsName agent sname s; in
    if n == null || !hasSops then s.source else config.sops.secrets.${n}.path;

  # town.json: the options as the schema has them, every key and secret of
  # an agent of this machine resolved to where it is here, btrfsDevice as a
  # device path with its subvolume.
  town = import ../../lib/town.nix (cfg // {
    btrfsDevice = btrfsDevice;
    agents = mapAttrs
      (name: a: if !(a.enable && a.host.enable) then a else a // {
        secrets = a.secrets // {
          sshKey = pathOf a.secrets.sshKey;
          gpgKey = pathOf a.secrets.gpgKey;
          extraSecrets = mapAttrs (sname: s: s // { source = sourceOf name sname s; }) a.secrets.extraSecrets;
        };
        credentials = mapAttrs (_: cr: cr // { source = pathOf cr.source; }) a.credentials;
      })
      cfg.agents;
  });
  townJson = pkgs.writeText "town.json" (builtins.toJSON town);

  # The agents' `sudo`: the package's compiled `nuketown-sudo` under the name
  # `sudo`. It runs the entry point beside its real location (the package's
  # `nuketown-elevate`) through the real sudo, with every argument untouched.
  sudoShim = pkgs.runCommand "nuketown-sudo-shim" { } ''
    mkdir -p $out/bin
    ln -s ${cfg.package}/bin/nuketown-sudo $out/bin/sudo
  '';
}
