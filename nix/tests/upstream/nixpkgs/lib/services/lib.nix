# The stand-in nixpkgs tree's `lib/services/lib.nix` (home-manager imports it
# as `pkgs.path + "/lib/services/lib.nix"`) is nixpkgs' own: this forwards to
# the file beside the real nixpkgs `lib` the evaluation runs with, found from
# where that `lib` defines `mkOption`.
{ lib, ... }@args:
import (dirOf (builtins.unsafeGetAttrPos "mkOption" lib).file + "/services/lib.nix") args
