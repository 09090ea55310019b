# NixOS VM test: ada's `sudo whoami` approved and denied through the town hall
# in mock mode, and ada's home levelled by `nuketown reset`.
{ self }:
{
  name = "nuketown-sudo-and-reset";

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];
    users.users.josh = { isNormalUser = true; };
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

    # Mock mode: the file must belong to an approver and be writable by nobody else.
    machine.succeed("install -o josh -m 0600 /dev/null /run/nuketown/mode")
    machine.succeed("echo MOCK_APPROVED > /run/nuketown/mode")
    out = machine.succeed("su - ada -c 'sudo whoami'").strip()
    assert out == "root", f"approved sudo whoami printed {out!r}"

    machine.succeed("echo MOCK_DENIED > /run/nuketown/mode")
    machine.fail("su - ada -c 'sudo whoami'")
    machine.succeed("nuketown audit --json | grep -F '[MOCK]'")

    # A new round: litter is gone, persisted work stays.
    machine.succeed("su - ada -c 'echo keep > ~/dev/keep; echo junk > ~/junk'")
    machine.succeed("nuketown reset ada")
    machine.fail("test -e /agents/ada/junk")
    machine.succeed("grep -qx keep /agents/ada/dev/keep")
  '';
}
