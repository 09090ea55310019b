# Homes on btrfs, levelled at every boot: `agentsDir` is a subvolume of
# `btrfsDevice`, mounted in the initrd (impermanence binds into it from
# there on), and before it is mounted every agent gets a new, empty home
# subvolume of its own. Two layouts:
# - the module guide's: `@agents` restored from the blank snapshot
#   `@agents-blank` beside it (a bare-UUID btrfsDevice means this one);
# - the town's own: subvolume `agents`, every home in it deleted.
# The layout on disk decides: `<btrfsSubvolume>-blank` there means the first.
{ config, lib, pkgs, options, utils, ... }@args:

let
  inherit (lib) mkIf mkMerge concatStringsSep attrNames;
  c = import ./common.nix args;
  inherit (c) cfg agents;
  device = c.btrfsDevice;
  sub = "/nuketown-btrfs/${cfg.btrfsSubvolume}";

  # Homes an interrupted round left (`.<name>.new-round`) and levelled homes
  # still in `nuketown reset`'s trash go too; nested subvolumes first.
  rollback = ''
    mkdir -p /nuketown-btrfs
    mount -t btrfs -o subvol=/ ${device} /nuketown-btrfs
    level() {
      for home in "$1"/* "$1"/.[!.]*; do
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
    }
    if [ -d ${sub}-blank ]; then
      if [ -d ${sub} ]; then
        level ${sub}
        btrfs subvolume delete ${sub} >/dev/null 2>&1 || rm -rf ${sub}
      fi
      btrfs subvolume snapshot ${sub}-blank ${sub} >/dev/null
    elif [ -d ${sub} ]; then
      level ${sub}
    else
      btrfs subvolume create ${sub} >/dev/null
    fi
    ${concatStringsSep "\n" (map (name: ''
      btrfs subvolume create ${sub}/${name} >/dev/null
      chown ${toString agents.${name}.uid}:${toString agents.${name}.uid} ${sub}/${name}
      chmod 700 ${sub}/${name}
    '') (attrNames agents))}
    umount /nuketown-btrfs
  '';
in
{
  config = mkIf (cfg.enable && cfg.btrfsDevice != null) (mkMerge [
    {
      assertions = [
        { assertion = lib.hasPrefix "/dev/" device; message = "nuketown.btrfsDevice: \"${cfg.btrfsDevice}\" is neither a device path such as /dev/disk/by-uuid/… nor a filesystem UUID as blkid prints it (38b243a0-c875-4758-8998-cc6c6a4c451e)."; }
        { assertion = builtins.match "[A-Za-z0-9@._-]+(/[A-Za-z0-9@._-]+)*" cfg.btrfsSubvolume != null && !(lib.hasInfix ".." cfg.btrfsSubvolume); message = "nuketown.btrfsSubvolume: \"${cfg.btrfsSubvolume}\" is not a subvolume path below the filesystem's top (letters, digits, '@', '.', '_' and '-', e.g. \"@agents\")."; }
      ];
      # Needed for boot: impermanence binds persisted paths into the homes
      # from the initrd on, so the filesystem holding them must be mounted there.
      fileSystems.${cfg.agentsDir} = { inherit device; fsType = "btrfs"; options = [ "subvol=${cfg.btrfsSubvolume}" ]; neededForBoot = true; };
      boot.initrd.supportedFilesystems.btrfs = true;
    }
    (mkIf (!config.boot.initrd.systemd.enable) {
      # Scripted stage 1: after the devices appear, before filesystems mount.
      boot.initrd.postDeviceCommands = lib.mkAfter rollback;
    })
    (mkIf config.boot.initrd.systemd.enable {
      # systemd stage 1 (which refuses postDeviceCommands): a unit between
      # the device and the homes' mount.
      boot.initrd.systemd.services.nuketown-rollback =
        let unit = "${utils.escapeSystemdPath device}.device"; in
        {
          description = "Nuketown: a new, empty home for every agent";
          wantedBy = [ "initrd.target" ];
          requires = [ unit ];
          after = [ unit ];
          before = [ "${utils.escapeSystemdPath "/sysroot${cfg.agentsDir}"}.mount" ];
          unitConfig.DefaultDependencies = false;
          serviceConfig.Type = "oneshot";
          script = rollback;
        };
    })
  ]);
}
