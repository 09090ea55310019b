# Checks for a real Nix machine (`nix flake check`): the package, the example
# town (examples/example.nix) evaluated as a whole NixOS system with the
# flake's module, home-manager, sops-nix and impermanence, the checks every
# nuketown configuration must pass (nix/tests/lib/module-checks.nix, the same
# ones the evaluation tests run against the upstream modules), the rendered
# sudoers and udev rules, and the NixOS VM test.
{ pkgs, self, home-manager, sops-nix, impermanence }:

let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  nuketown = self.packages.${system}.default;

  example = import "${pkgs.path}/nixos/lib/eval-config.nix" {
    inherit system;
    modules = [
      self.nixosModules.default
      ../examples/example.nix
      {
        boot.loader.grub.enable = false;
        fileSystems."/" = { device = "/dev/vda"; fsType = "ext4"; };
        networking.hostName = "forge";
        system.stateVersion = "25.11";
        users.users.josh = { isNormalUser = true; uid = 1000; };
        home-manager.useGlobalPkgs = true;
        # ada runs Claude Code, which nixpkgs marks unfree.
        nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) [ "claude-code" ];
      }
    ];
  };
  c = example.config;

  # A check that holds at evaluation time: builds to an empty file or fails with the reason.
  check = name: r: pkgs.runCommand "nuketown-check-${name}" { } (
    if r.ok then "touch $out" else throw "nuketown check ${name} failed: ${r.why}"
  );
  udevRules = lib.head (lib.filter (p: (p.name or "") == "nuketown-udev-rules") c.services.udev.packages);
in
lib.mapAttrs check (import ./tests/lib/module-checks.nix { inherit lib; config = c; }) // {
  package = nuketown;

  # The whole system evaluates: every assertion holds (NixOS checks them
  # before it gives a toplevel) and there is no warning. Not built.
  evaluates = check "evaluates" {
    ok = builtins.seq (builtins.unsafeDiscardStringContext c.system.build.toplevel.drvPath) (c.warnings == [ ]);
    why = "the example system evaluates without warnings: ${builtins.toJSON c.warnings}";
  };

  # The binaries accept the module's town.json.
  town-json = pkgs.runCommand "nuketown-check-town-json" { } ''
    ${nuketown}/bin/nuketown render udev --setfacl /bin/setfacl --town ${c.environment.etc."nuketown/town.json".source} > /dev/null
    touch $out
  '';

  # The sudoers NixOS writes is valid as a whole (visudo -c of the complete
  # file, as NixOS's own build of /etc/sudoers checks it) and gives ada the
  # entry point only.
  sudoers-file = pkgs.runCommand "nuketown-check-sudoers-file" { nativeBuildInputs = [ pkgs.sudo ]; } ''
    sudoers=${c.environment.etc.sudoers.source}
    visudo -cf $sudoers
    grep -E '^ada[[:space:]]+ALL=\(root\)[[:space:]]+NOPASSWD: ${lib.escapeRegex c.nuketown.hall.elevatePath}$' $sudoers
    ! grep -E '^(vox|ada)[[:space:]].*ALL$' $sudoers
    grep -F 'Defaults!${c.nuketown.hall.elevatePath} env_reset, !setenv' $sudoers
    touch $out
  '';

  udev-rules = pkgs.runCommand "nuketown-check-udev-rules" { } ''
    rules=${udevRules}/lib/udev/rules.d/70-nuketown.rules
    grep -F 'SUBSYSTEM=="tty", ACTION=="add|bind", ATTRS{idProduct}=="374b", ATTRS{idVendor}=="0483", RUN+="${pkgs.acl}/bin/setfacl -m u:ada:rw $env{DEVNAME}"' $rules
    grep -F 'SUBSYSTEM=="usb", ACTION=="add|bind", ATTR{idProduct}=="5bf0", ATTR{idVendor}=="1209", RUN+="${pkgs.acl}/bin/setfacl -m u:vox:r $env{DEVNAME}"' $rules
    touch $out
  '';

  vm-sudo-and-reset = pkgs.testers.runNixOSTest (import ./tests/vm-sudo-and-reset.nix { inherit self; });
}
