# Checks for a real Nix machine (`nix flake check`): the package, evaluation
# checks of the module on the example town, and NixOS VM tests.
{ pkgs, self, home-manager, sops-nix, impermanence }:

let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;

  evalExample = (import "${pkgs.path}/nixos/lib/eval-config.nix" {
    inherit system;
    modules = [
      self.nixosModules.default
      ../examples/example.nix
      {
        boot.loader.grub.enable = false;
        fileSystems."/" = { device = "/dev/vda"; fsType = "ext4"; };
        networking.hostName = "forge";
        system.stateVersion = "25.05";
        users.users.josh.isNormalUser = true;
      }
    ];
  }).config;
  c = evalExample;

  # A check that holds at evaluation time: builds to an empty file or fails with the reason.
  check = name: ok: why: pkgs.runCommand "nuketown-check-${name}" { } (
    if ok then "touch $out" else throw "nuketown check ${name} failed: ${why}"
  );
  ada = c.users.users.ada;
  hm = c.home-manager.users.ada;
in
{
  package = self.packages.${system}.default;

  users = check "users"
    (ada.uid == 1100 && ada.group == "ada" && ada.home == "/agents/ada" && ada.homeMode == "700"
      && !(lib.elem "wheel" ada.extraGroups) && c.users.users.vox.uid == 1101
      && c.users.groups.nuketown-approvers.members == [ "josh" ])
    "ada/vox must be private users under /agents, josh the only approver";

  identity = check "identity"
    (hm.home.file ? ".config/nuketown/identity.toml" && hm.home.file ? ".claude/CLAUDE.md" && hm.home.file ? "AGENTS.md")
    "home-manager lays down identity.toml, CLAUDE.md and AGENTS.md";

  town-json = pkgs.runCommand "nuketown-check-town-json" { } ''
    ${self.packages.${system}.default}/bin/nuketown status --json --town ${c.environment.etc."nuketown/town.json".source} > $out
  '';

  sudoers = check "sudoers"
    (lib.all (r: r.commands == [{ command = c.nuketown.hall.elevatePath; options = [ "NOPASSWD" ]; }]) c.security.sudo.extraRules
      && lib.length c.security.sudo.extraRules == 1 && (lib.head c.security.sudo.extraRules).users == [ "ada" ]
      && lib.hasInfix "!setenv" c.security.sudo.extraConfig)
    "sudoers may name only the entry point, for ada only, NOPASSWD, without SETENV";

  udev = pkgs.runCommand "nuketown-check-udev" { } ''
    rules=${lib.head c.services.udev.packages}/lib/udev/rules.d/70-nuketown.rules
    grep -F 'SUBSYSTEM=="tty", ACTION=="add|bind", ATTRS{idProduct}=="374b", ATTRS{idVendor}=="0483", RUN+="${pkgs.acl}/bin/setfacl -m u:ada:rw $env{DEVNAME}"' $rules
    grep -F 'SUBSYSTEM=="usb", ACTION=="add|bind", ATTR{idProduct}=="5bf0", ATTR{idVendor}=="1209", RUN+="${pkgs.acl}/bin/setfacl -m u:vox:r $env{DEVNAME}"' $rules
    touch $out
  '';

  persistence = check "persistence"
    (lib.elem "d /persist/agents/ada/dev 0700 ada ada -" c.systemd.tmpfiles.rules
      && c.environment.persistence."/persist".users.ada.home == "/agents/ada")
    "persisted paths exist under /persist/agents/<name> and are bound by impermanence";

  claude-code = check "claude-code"
    (hm.programs.claude-code.enable && !(c.home-manager.users.vox.programs.claude-code.enable or false))
    "claude-code only where claudeCode.enable";

  hall = check "hall"
    (c.systemd.services.nuketown-hall.wantedBy == [ "multi-user.target" ]
      && c.systemd.sockets.nuketown-hall.socketConfig.SocketMode == "0600"
      && c.systemd.sockets.nuketown-approvers.socketConfig.SocketGroup == "nuketown-approvers")
    "the hall runs with a root-only requester socket and a group-only approver socket";

  vm-sudo-and-reset = pkgs.testers.runNixOSTest (import ./tests/vm-sudo-and-reset.nix { inherit self; });
}
