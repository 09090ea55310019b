# NixOS VM test: ada's `sudo whoami` approved and denied through the town hall
# in mock mode, from a non-interactive login shell (the shim is first on
# PATH there too), and a new round for ada: the home levelled, persisted work
# kept, and home-manager's files laid into the new home again.
{ self }:
{
  name = "nuketown-sudo-and-reset";

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];
    users.users.josh = { isNormalUser = true; };
    home-manager.useGlobalPkgs = true;
    nuketown = {
      enable = true;
      humanUser = "josh";
      agents.ada = {
        uid = 1100;
        persist.directories = [ "dev" ];
        sudo.enable = true;
      };
    };
  };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("nuketown-hall.service")
    machine.wait_for_unit("home-manager-ada.service")

    # The agent's sudo is the package's compiled nuketown-sudo, also in a
    # non-interactive login shell.
    shim = machine.succeed("su - ada -c 'command -v sudo'").strip()
    assert shim.endswith("-nuketown-sudo-shim/bin/sudo") and shim.startswith("/nix/store/"), shim
    assert machine.succeed(f"readlink {shim}").strip().endswith("/bin/nuketown-sudo")

    # The human's side: the portal commands on the PATH, and git verifying
    # the agents with the allowed signers the boot round published.
    machine.succeed("su - josh -c 'command -v portal-ada && command -v portal'")
    machine.succeed("grep -q '^ada@nixos.local namespaces=\"git\" ssh-ed25519 ' /etc/nuketown/allowed_signers")
    signers = machine.succeed("su - josh -c 'git config --get gpg.ssh.allowedSignersFile'").strip()
    assert signers == "/etc/nuketown/allowed_signers", signers

    # Mock mode: the file must belong to an approver and be writable by nobody else.
    machine.succeed("install -o josh -m 0600 /dev/null /run/nuketown/mode")
    machine.succeed("echo MOCK_APPROVED > /run/nuketown/mode")
    out = machine.succeed("su - ada -c 'sudo whoami'").strip()
    assert out == "root", f"approved sudo whoami printed {out!r}"

    machine.succeed("echo MOCK_DENIED > /run/nuketown/mode")
    machine.fail("su - ada -c 'sudo whoami'")
    machine.succeed("nuketown audit --json | grep -F '[MOCK]'")

    # A new round: litter is gone, persisted work stays, home-manager lays
    # the identity files into the new home (nuketown reset restarts
    # home-manager-ada.service).
    machine.succeed("su - ada -c 'echo keep > ~/dev/keep; echo junk > ~/junk'")
    machine.succeed("nuketown reset ada")
    machine.fail("test -e /agents/ada/junk")
    machine.succeed("grep -qx keep /agents/ada/dev/keep")
    machine.succeed("test -e /agents/ada/.config/nuketown/identity.toml")
    assert machine.succeed("su - ada -c 'command -v sudo'").strip() == shim
  '';
}
