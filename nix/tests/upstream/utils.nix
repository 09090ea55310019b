# Stand-in for the `utils` module argument (nixpkgs nixos/lib/utils.nix),
# which impermanence, home-manager's NixOS module and nuketown's module use.
# Only the members they use, written from their documented meaning:
# - escapeSystemdPath: systemd.unit(5)'s path escaping ("/" becomes "-",
#   leading/trailing "/" dropped, characters other than ASCII alphanumerics,
#   ":", "_" and "." — and a leading "." — become C-style "\xNN"; "/" is "-").
# - pathsNeededForBoot: the paths NixOS always mounts in stage 1.
{ lib }:
let
  hex = c: "\\x" + lib.fixedWidthString 2 "0" (lib.toLower (lib.toHexString (lib.strings.charToInt c)));
  plain = c: builtins.match "[A-Za-z0-9:_.]" c != null;
  escapeChar = i: c:
    if c == "/" then "-"
    else if c == "." && i == 0 then hex c
    else if plain c then c
    else hex c;
  squash = s: if lib.hasInfix "//" s then squash (lib.replaceStrings [ "//" ] [ "/" ] s) else s;
  trim = s: lib.removeSuffix "/" (lib.removePrefix "/" (squash s));
in
{
  escapeSystemdPath = s:
    if squash s == "/" then "-"
    else lib.concatStrings (lib.imap0 escapeChar (lib.stringToCharacters (trim s)));

  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];

  fsNeededForBoot = fs: fs.neededForBoot || builtins.elem fs.mountPoint [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
}
