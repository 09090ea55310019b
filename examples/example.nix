# The example town as a NixOS configuration: import the flake's module, then
#   imports = [ nuketown.nixosModules.default ./example.nix ];
# Same town as examples/town.toml. ada runs Claude Code, which nixpkgs marks
# unfree: allow it (nixpkgs.config.allowUnfreePredicate, docs/nixos.md).
{ pkgs, ... }:
{
  nuketown = {
    enable = true;
    humanUser = "josh";
    humanName = "Josh Perry";
    humanEmail = "josh@example.org";
    projectDirs = [ "~/dev" ];
    basePackages = [ pkgs.git pkgs.ripgrep ];

    agents.ada = {
      uid = 1100;
      role = "software";
      description = "Writes and reviews Rust and Nix; keeps the build green.";
      persist.directories = [ "dev" ".local/share/direnv" ];
      persist.files = [ ".bash_history" ];
      claudeCode.enable = true;
      claudeCode.settings = { permissions = { allow = [ "Bash(cargo test:*)" ]; }; };
      portal.command = "claude";
      sudo = {
        enable = true;
        timeout = 120;
        autoApprove = [
          { argv = [ "systemctl" "status" ]; extra = { pattern = "[a-z0-9@._-]+"; }; }
          { argv = [ "/usr/bin/true" ]; }
        ];
        deny = [
          { argv = [ "/bin/bash" ]; prefix = true; }
          { argv = [ "/bin/sh" ]; prefix = true; }
        ];
      };
      devices = [{ subsystem = "tty"; attrs = { idVendor = "0483"; idProduct = "374b"; }; }];
    };

    agents.vox = {
      uid = 1101;
      role = "research";
      description = "Reads papers and writes summaries with sources.";
      persist.directories = [ "notes" ];
      devices = [{ subsystem = "usb"; attrs = { idVendor = "1209"; idProduct = "5bf0"; }; permission = "r"; }];
    };

    # A directory ada and josh write and vox reads (at /persist/shared/review).
    sharedDirs.review = { gid = 31200; members = { ada = "rw"; vox = "ro"; josh = "rw"; }; };
  };
}
