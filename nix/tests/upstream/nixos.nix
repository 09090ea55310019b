# Stand-ins for the core NixOS options that nuketown's module and the real
# home-manager, impermanence and sops-nix modules set or read. nixpkgs itself
# (4.4 GB) is not available here, so each option below is declared with the
# name and type of its upstream declaration (the nixpkgs file is named above
# each group). Only declarations: what those upstream modules then do with
# the values (write /etc/sudoers, unit files, …) is not reproduced here, except
# in nixos-defaults.nix, which adds the definitions real NixOS makes to options
# nuketown's checks read.
#
# A value of the wrong type, an undeclared option, a unit name systemd would
# refuse, or a stage-2-only unit option used in the initrd is an evaluation
# error here as it is on NixOS.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-lib.nix: unitNameType.
  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # nixos/lib/systemd-unit-options.nix: unitOption (lists concatenate; other
  # values must agree).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if lib.isList (lib.head defs').value then
        lib.concatMap (d: if lib.isList d.value then d.value else throw "${lib.showOption loc}: the definitions mix lists and non-lists") defs'
      else lib.mergeEqualOption loc defs';
  };
  units = mkOption { type = types.listOf unitName; default = [ ]; };

  # nixos/lib/systemd-unit-options.nix: commonUnitOptions (stage 1 and 2).
  commonUnit = {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      overrideStrategy = mkOption { type = types.enum [ "asDropinIfExists" "asDropin" ]; default = "asDropinIfExists"; };
      description = mkOption { type = types.singleLineStr; default = ""; };
      documentation = mkOption { type = types.listOf types.str; default = [ ]; };
      requires = units;
      wants = units;
      upholds = units;
      after = units;
      before = units;
      bindsTo = units;
      partOf = units;
      conflicts = units;
      requisite = units;
      requiredBy = units;
      wantedBy = units;
      upheldBy = units;
      aliases = units;
      onFailure = units;
      onSuccess = units;
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      startLimitBurst = mkOption { type = types.int; };
      startLimitIntervalSec = mkOption { type = types.int; };
    };
  };
  # stage2CommonUnitOptions: only for units of the running system.
  stage2Unit = {
    imports = [ commonUnit ];
    options = {
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      reloadTriggers = mkOption { type = types.listOf unitOption; default = [ ]; };
    };
  };
  # serviceOptions (both stages).
  service = {
    options = {
      environment = mkOption { type = with types; attrsOf (nullOr (oneOf [ str path package ])); default = { }; };
      path = mkOption { type = with types; listOf (oneOf [ package str ]); default = [ ]; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      scriptArgs = mkOption { type = types.str; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
      postStart = mkOption { type = types.lines; default = ""; };
      reload = mkOption { type = types.lines; default = ""; };
      preStop = mkOption { type = types.lines; default = ""; };
      postStop = mkOption { type = types.lines; default = ""; };
    };
  };
  # stage2ServiceOptions.
  stage2Service = {
    imports = [ stage2Unit service ];
    options = {
      restartIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      notSocketActivated = mkOption { type = types.bool; default = false; };
      startAt = mkOption { type = with types; either str (listOf str); default = [ ]; };
    };
  };
  # stage1ServiceOptions: no restart triggers in the initrd.
  stage1Service = { imports = [ commonUnit service ]; };
  socket = {
    options = {
      listenStreams = mkOption { type = types.listOf types.str; default = [ ]; };
      listenDatagrams = mkOption { type = types.listOf types.str; default = [ ]; };
      socketConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };
  mount = {
    options = {
      what = mkOption { type = types.str; };
      where = mkOption { type = types.str; };
      type = mkOption { type = types.str; default = ""; };
      options = mkOption { type = types.commas; default = ""; };
      mountConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  # nixos/modules/security/sudo.nix and sudo-rs.nix: extraRules.
  sudoRules = tags: mkOption {
    default = [ ];
    type = types.listOf (types.submodule {
      options = {
        users = mkOption { type = with types; listOf (either str int); default = [ ]; };
        groups = mkOption { type = with types; listOf (either str int); default = [ ]; };
        host = mkOption { type = types.str; default = "ALL"; };
        runAs = mkOption { type = types.str; default = "ALL:ALL"; };
        commands = mkOption {
          type = with types; listOf (either str (submodule {
            options = {
              command = mkOption { type = types.str; };
              options = mkOption {
                type = types.listOf (types.enum tags);
                default = [ ];
              };
            };
          }));
        };
      };
    });
  };
  sudoTags = [ "NOPASSWD" "PASSWD" "NOEXEC" "EXEC" "SETENV" "NOSETENV" "LOG_INPUT" "NOLOG_INPUT" "LOG_OUTPUT" "NOLOG_OUTPUT" ];
  sudoOptions = enableDefault: tags: {
    enable = mkOption { type = types.bool; default = enableDefault; };
    package = mkOption { type = types.package; default = if enableDefault then pkgs.sudo else pkgs.sudo-rs; };
    wheelNeedsPassword = mkOption { type = types.bool; default = true; };
    execWheelOnly = mkOption { type = types.bool; default = false; };
    defaultOptions = mkOption { type = types.listOf types.str; default = [ ]; };
    configFile = mkOption { type = types.lines; };
    extraRules = sudoRules tags;
    extraConfig = mkOption { type = types.lines; default = ""; };
  };
in
{
  imports = [
    ./nixpkgs/nixos/modules/misc/assertions.nix
    ./nixpkgs/nixos/modules/misc/meta.nix
  ];

  options = {
    # nixos/modules/config/users-groups.nix
    users.mutableUsers = mkOption { type = types.bool; default = true; };
    users.users = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, config, ... }: {
        options = {
          name = mkOption { type = types.passwdEntry types.str; };
          description = mkOption { type = types.passwdEntry types.str; default = ""; };
          uid = mkOption { type = with types; nullOr int; default = null; };
          isSystemUser = mkOption { type = types.bool; default = false; };
          isNormalUser = mkOption { type = types.bool; default = false; };
          group = mkOption { type = types.str; default = ""; };
          extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
          home = mkOption { type = types.passwdEntry types.path; default = "/var/empty"; };
          homeMode = mkOption { type = types.strMatching "[0-7]{1,5}"; default = "700"; };
          createHome = mkOption { type = types.bool; default = false; };
          useDefaultShell = mkOption { type = types.bool; default = false; };
          shell = mkOption { type = types.nullOr (types.either types.shellPackage (types.passwdEntry types.path)); default = pkgs.shadow; };
          packages = mkOption { type = types.listOf types.package; default = [ ]; };
          linger = mkOption { type = types.nullOr types.bool; default = null; };
          hashedPassword = mkOption { type = with types; nullOr (passwdEntry str); default = null; };
        };
        # Upstream's own defaults for the options above.
        config = lib.mkMerge [
          { name = lib.mkDefault name; }
          (lib.mkIf config.isNormalUser {
            group = lib.mkDefault "users";
            createHome = lib.mkDefault true;
            home = lib.mkDefault "/home/${config.name}";
            useDefaultShell = lib.mkDefault true;
          })
        ];
      }));
    };
    users.groups = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          name = mkOption { type = types.passwdEntry types.str; };
          gid = mkOption { type = with types; nullOr int; default = null; };
          members = mkOption { type = with types; listOf (passwdEntry str); default = [ ]; };
        };
        config.name = lib.mkDefault name;
      }));
    };

    # nixos/modules/security/sudo.nix (enabled by default) and sudo-rs.nix.
    security.sudo = sudoOptions true (sudoTags ++ [ "MAIL" "NOMAIL" "FOLLOW" "NOFOLLOW" "INTERCEPT" "NOINTERCEPT" ]);
    security.sudo-rs = sudoOptions false sudoTags;

    # nixos/modules/system/boot/systemd.nix (units: nixos/lib/systemd-unit-options.nix)
    systemd.services = mkOption { type = types.attrsOf (types.submodule stage2Service); default = { }; };
    systemd.sockets = mkOption { type = types.attrsOf (types.submodule { imports = [ stage2Unit socket ]; }); default = { }; };
    systemd.mounts = mkOption { type = types.listOf (types.submodule { imports = [ stage2Unit mount ]; }); default = [ ]; };
    systemd.user.services = mkOption { type = types.attrsOf (types.submodule stage2Service); default = { }; };
    # nixos/modules/system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
    # nixos/modules/system/boot/systemd/sysusers.nix
    systemd.sysusers.enable = mkOption { type = types.bool; default = false; };

    # nixos/modules/services/hardware/udev.nix
    services.udev.packages = mkOption { type = types.listOf types.path; default = [ ]; };
    services.udev.extraRules = mkOption { type = types.lines; default = ""; };

    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh.enable = mkOption { type = types.bool; default = false; };
    services.openssh.hostKeys = mkOption { type = types.listOf types.attrs; default = [ ]; };

    # nixos/modules/tasks/filesystems.nix
    fileSystems = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          mountPoint = mkOption { type = types.nonEmptyStr; default = name; };
          device = mkOption { type = types.nullOr types.nonEmptyStr; default = null; };
          label = mkOption { type = types.nullOr types.str; default = null; };
          fsType = mkOption { type = types.nonEmptyStr; default = "auto"; };
          options = mkOption { type = types.nonEmptyListOf types.nonEmptyStr; default = [ "defaults" ]; };
          depends = mkOption { type = types.listOf types.nonEmptyStr; default = [ ]; };
          neededForBoot = mkOption { type = types.bool; default = false; };
          noCheck = mkOption { type = types.bool; default = false; };
        };
      }));
    };

    # nixos/modules/system/boot/stage-1.nix
    boot.initrd.postDeviceCommands = mkOption { type = types.lines; default = ""; };
    boot.initrd.postMountCommands = mkOption { type = types.lines; default = ""; };
    # nixos/modules/tasks/filesystems.nix (a list is still accepted upstream)
    boot.initrd.supportedFilesystems = mkOption {
      type = types.coercedTo (types.listOf types.str) (fss: lib.genAttrs fss (_: true)) (types.attrsOf types.bool);
      default = { };
    };
    # nixos/modules/system/boot/systemd/initrd.nix
    boot.initrd.systemd.enable = mkOption { type = types.bool; default = false; };
    boot.initrd.systemd.services = mkOption { type = types.attrsOf (types.submodule stage1Service); default = { }; };
    boot.initrd.systemd.mounts = mkOption { type = types.listOf (types.submodule { imports = [ commonUnit mount ]; }); default = [ ]; };
    boot.initrd.systemd.suppressedUnits = mkOption { type = types.listOf types.str; default = [ ]; };
    boot.initrd.systemd.storePaths = mkOption { type = types.listOf types.unspecified; default = [ ]; };

    # nixos/modules/system/etc/etc.nix
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, config, ... }: {
        options = {
          enable = mkOption { type = types.bool; default = true; };
          target = mkOption { type = types.str; default = name; };
          text = mkOption { type = types.nullOr types.lines; default = null; };
          source = mkOption { type = types.path; };
          mode = mkOption { type = types.str; default = "symlink"; };
          user = mkOption { type = types.str; default = "+0"; };
          group = mkOption { type = types.str; default = "+0"; };
        };
        # As etc.nix: a file given by its text is that text in the store.
        config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text));
      }));
    };
    # nixos/modules/config/system-path.nix
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.pathsToLink = mkOption { type = types.listOf types.str; default = [ ]; };

    # nixos/modules/tasks/network-interfaces.nix
    networking.hostName = mkOption { type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$"; default = "nixos"; };
    networking.nameservers = mkOption { type = types.listOf types.str; default = [ ]; };
    # nixos/modules/system/boot/resolved.nix
    services.resolved.enable = mkOption { type = types.bool; default = false; };

    # nixos/modules/services/networking/nftables.nix
    networking.nftables.enable = mkOption { type = types.bool; default = false; };
    networking.nftables.tables = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          enable = mkOption { type = types.bool; default = true; };
          name = mkOption { type = types.str; default = name; };
          family = mkOption { type = types.enum [ "ip" "ip6" "inet" "arp" "bridge" "netdev" ]; };
          content = mkOption { type = types.lines; default = ""; };
        };
      }));
      default = { };
    };

    # nixos/modules/misc/version.nix
    system.stateVersion = mkOption { type = types.str; };
    # nixos/modules/system/activation/activation-script.nix
    system.activationScripts = mkOption { type = types.attrsOf types.unspecified; default = { }; };
    system.userActivationScripts = mkOption { type = types.attrsOf types.unspecified; default = { }; };
    system.dryActivationScript = mkOption { type = types.str; internal = true; readOnly = true; default = ""; };
    # nixos/modules/system/activation/top-level.nix
    system.build = mkOption { type = types.lazyAttrsOf types.unspecified; internal = true; default = { }; };

    # nixos/modules/config/nix.nix
    nix.enable = mkOption { type = types.bool; default = true; };
    nix.package = mkOption { type = types.package; default = pkgs.nix; };
  };
}
