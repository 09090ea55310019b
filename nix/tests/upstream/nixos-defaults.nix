# What real NixOS adds to options that nuketown's checks read, so that the
# checks meet the same neighbours here as on a real machine (the checks once
# assumed they were alone in these lists):
# - nixos/modules/security/sudo.nix and sudo-rs.nix: rules for root
#   (mkOrder 400) and group wheel (mkOrder 600) in the enabled one's
#   extraRules; enabling sudo-rs turns sudo off by default, and both at once
#   is refused by an assertion.
# - nixos/modules/services/hardware/udev.nix: NixOS's own packages
#   (99-local.rules and 99-local.hwdb) in services.udev.packages.
{ config, lib, pkgs, ... }:
let
  rootAndWheel = cfg: lib.mkMerge [
    (lib.mkOrder 400 [{ users = [ "root" ]; commands = [{ command = "ALL"; options = cfg.defaultOptions; }]; }])
    (lib.mkOrder 600 [{ groups = [ "wheel" ]; commands = [{ command = "ALL"; options = lib.optional (!cfg.wheelNeedsPassword) "NOPASSWD" ++ cfg.defaultOptions; }]; }])
  ];
in
{
  config = lib.mkMerge [
    (lib.mkIf config.security.sudo.enable {
      security.sudo.extraRules = rootAndWheel config.security.sudo;
      security.sudo.defaultOptions = [ "SETENV" ];
    })
    (lib.mkIf config.security.sudo-rs.enable {
      security.sudo-rs.extraRules = rootAndWheel config.security.sudo-rs;
      security.sudo.enable = lib.mkDefault false;
      assertions = [{ assertion = !config.security.sudo.enable; message = "`security.sudo` and `security.sudo-rs` cannot both be enabled"; }];
    })
    {
      # NixOS's modules come before the configuration's own (eval-config
      # evaluates baseModules ++ modules), so its packages come first.
      services.udev.packages = lib.mkBefore [
        (pkgs.writeTextDir "etc/udev/rules.d/99-local.rules" config.services.udev.extraRules)
        (pkgs.writeTextDir "etc/udev/hwdb.d/99-local.hwdb" "")
      ];
    }
  ];
}
