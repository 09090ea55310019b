//! The module guide's short forms are shorthand for the schema's long ones:
//! a town written in them parses to the very town written out in full, and
//! what they cannot mean is refused naming the key, the form and the fix.

use nuketown_town::{parse, Format, Town, TownError};

fn toml(text: &str) -> Result<Town, TownError> {
    parse(text, Format::Toml, "town.toml", "forge")
}

fn err(text: &str) -> String {
    toml(text).expect_err("must be rejected").to_string()
}

/// A town as a reader of the module guide writes it.
const SHORT: &str = r#"
btrfsDevice = "0f6a1c3e-5b2d-4e8f-9a7c-2d4b6e8f0a1c"
sopsFile = "/etc/nuketown/agents.yaml"
humanUser = "mara"

[cloud]
enable = true
resources = "small"
scaling = { maxResources = "large", idleTimeout = 3600 }

[agents.kit]
uid = 1200
role = "firmware"
persist = ["src", ".config/claude"]
secrets.sshKey = "kit/ssh-key"
secrets.gpgKey = "kit/gpg-key"
secrets.extraSecrets = { forge = "kit/forge-token" }
sudo = { enable = true, commands = ["systemctl", "dmesg --follow"] }
host.enable = true

[agents.wren]
uid = 1201
cloud = { enable = false }
"#;

/// The same town in the schema's long forms.
const LONG: &str = r#"
btrfsDevice = "/dev/disk/by-uuid/0f6a1c3e-5b2d-4e8f-9a7c-2d4b6e8f0a1c"
btrfsSubvolume = "@agents"
sopsFile = "/etc/nuketown/agents.yaml"
humanUser = "mara"
basePackages = ["git", "ripgrep", "fd", "jq", "curl", "tree"]

[cloud]
enable = true
resources = "small"
scaling = { maxResources = "large", idleTimeout = "3600s" }

[agents.kit]
uid = 1200
role = "firmware"
persist = { directories = ["src", ".config/claude"], files = [] }
secrets.sshKey = "kit/ssh-key"
secrets.gpgKey = "kit/gpg-key"
secrets.extraSecrets.forge = { source = "kit/forge-token", mode = "0400" }
host.enable = true
claudeCode.agentName = "kit-firmware"
[agents.kit.sudo]
enable = true
commands = [{ argv = ["systemctl"], prefix = true }, { argv = ["dmesg", "--follow"] }]
[agents.kit.cloud]
enable = true
resources = "small"
scaling = { maxResources = "large", idleTimeout = "3600s" }

[agents.wren]
uid = 1201
[agents.wren.cloud]
enable = false
resources = "small"
scaling = { maxResources = "large", idleTimeout = "3600s" }
"#;

#[test]
fn the_module_guides_forms_are_the_long_forms() {
    let short = toml(SHORT).unwrap();
    let mut long = toml(LONG).unwrap();
    // agentName written out is the default, spelled.
    assert_eq!(short.identity("kit").claude_agent_name, "kit-firmware");
    long.agents.get_mut("kit").unwrap().claude_code.agent_name = None;
    assert_eq!(short, long);

    let kit = &short.agents["kit"];
    assert_eq!(kit.persist.directories, ["src", ".config/claude"]);
    assert!(kit.persist.files.is_empty());
    let forge = &kit.secrets.extra_secrets["forge"];
    assert_eq!(
        forge.source.as_deref().unwrap().to_str(),
        Some("kit/forge-token")
    );
    assert_eq!(forge.path, None);
    assert_eq!(
        short.btrfs_device.as_deref(),
        Some("/dev/disk/by-uuid/0f6a1c3e-5b2d-4e8f-9a7c-2d4b6e8f0a1c")
    );
    assert_eq!(short.btrfs_subvolume.as_deref(), Some("@agents"));
    // The town-wide cloud table is every agent's default; an agent's own key wins.
    assert!(kit.cloud.enable && kit.host.enable == Some(true) && kit.on_host());
    assert_eq!(kit.cloud.resources, "small");
    assert_eq!(kit.cloud.scaling.idle_timeout.as_deref(), Some("3600s"));
    assert!(!short.agents["wren"].cloud.enable);
    assert!(short.agents["wren"].on_host());
    assert_eq!(
        short.base_packages,
        ["git", "ripgrep", "fd", "jq", "curl", "tree"]
    );
}

#[test]
fn the_short_forms_survive_town_json_as_long_forms() {
    let town = toml(SHORT).unwrap();
    let json = serde_json::to_value(&town).unwrap();
    assert_eq!(
        json["agents"]["kit"]["persist"],
        serde_json::json!({ "directories": ["src", ".config/claude"], "files": [] })
    );
    assert_eq!(
        json["agents"]["kit"]["sudo"]["commands"],
        serde_json::json!([{ "argv": ["systemctl"], "prefix": true }, { "argv": ["dmesg", "--follow"], "prefix": false }])
    );
    assert_eq!(
        json["agents"]["kit"]["cloud"]["scaling"]["idleTimeout"],
        "3600s"
    );
    let again = parse(&json.to_string(), Format::Json, "town.json", "elsewhere").unwrap();
    assert_eq!(again, town);
}

#[test]
fn a_path_btrfs_device_keeps_the_towns_own_layout() {
    let town = toml("btrfsDevice = \"/dev/disk/by-label/nixos\"\n").unwrap();
    assert_eq!(town.btrfs_subvolume.as_deref(), Some("agents"));
    let town = toml(
        "btrfsDevice = \"0f6a1c3e-5b2d-4e8f-9a7c-2d4b6e8f0a1c\"\nbtrfsSubvolume = \"homes\"\n",
    )
    .unwrap();
    assert_eq!(town.btrfs_subvolume.as_deref(), Some("homes"));
    assert!(toml("").unwrap().btrfs_subvolume.is_none());
}

#[test]
fn an_extra_secret_without_source_is_the_agents_sops_secret_with_a_sops_file() {
    let town = toml(
        "sopsFile = \"/s.yaml\"\n[agents.kit]\nuid = 1200\nsecrets.extraSecrets.gh.path = \".config/gh/hosts.yml\"\n",
    )
    .unwrap();
    let gh = &town.agents["kit"].secrets.extra_secrets["gh"];
    assert_eq!(gh.source.as_deref().unwrap().to_str(), Some("kit/gh"));
    assert_eq!(gh.path.as_deref(), Some(".config/gh/hosts.yml"));
}

#[test]
fn what_the_short_forms_cannot_mean_is_refused_with_the_fix() {
    let e = err("[agents.kit]\nuid = 1200\nsecrets.sshKey = \"kit/ssh-key\"\n");
    assert!(
        e.contains("agents.kit.secrets.sshKey: \"kit/ssh-key\" names a sops secret, but the town declares no sopsFile to find it in; set sopsFile"),
        "{e}"
    );
    let e =
        err("sopsFile = \"/s.yaml\"\n[agents.kit]\nuid = 1200\nsecrets.gpgKey = \"../gpg key\"\n");
    assert!(
        e.contains("agents.kit.secrets.gpgKey: \"../gpg key\" is neither an absolute path to the file nor a sops secret name"),
        "{e}"
    );
    let e = err("[agents.kit]\nuid = 1200\nsecrets.extraSecrets.gh = { mode = \"0400\" }\n");
    assert!(
        e.contains("agents.kit.secrets.extraSecrets.gh: declares neither source nor path; name the sops secret (`gh = \"kit/gh\"`)"),
        "{e}"
    );
    let e = err("[agents.kit]\nuid = 1200\nsudo.commands = [\"systemctl\"]\n");
    assert!(
        e.contains("agents.kit.sudo.commands: lists the commands the agent may ask for, but sudo.enable is false"),
        "{e}"
    );
    let e = err("btrfsDevice = \"nixos\"\n");
    assert!(
        e.contains("btrfsDevice: \"nixos\" is neither a device path (\"/dev/disk/by-uuid/…\""),
        "{e}"
    );
    let e = err("[cloud]\nscaling.idleTimeout = -5\n");
    assert!(
        e.contains("cloud.scaling.idleTimeout: -5 seconds is negative"),
        "{e}"
    );
    let e = err("[cloud]\nresources = \"huge\"\n");
    assert!(e.contains("cloud.resources: \"huge\" is not a tier"), "{e}");
    let e = err("[agents.kit]\nuid = 1200\nkeys.publicKey = \"not a key\"\n");
    assert!(
        e.contains("agents.kit.keys.publicKey: is not an SSH public key"),
        "{e}"
    );
}

#[test]
fn unknown_keys_inside_the_long_forms_stay_errors_with_their_path() {
    let e = err("[agents.kit]\nuid = 1200\npersist = { directory = [\"src\"] }\n");
    assert!(
        e.contains("agents.kit.persist.directory: unknown key `directory`; remove it or use one of: directories, files"),
        "{e}"
    );
    let e = err("[agents.kit]\nuid = 1200\npersist = [1]\n");
    assert!(e.contains("agents.kit.persist[0]"), "{e}");
    let e = err("[agents.kit]\nuid = 1200\nsecrets.extraSecrets.gh = { sorce = \"x\" }\n");
    assert!(
        e.contains("agents.kit.secrets.extraSecrets.gh.sorce: unknown key `sorce`; remove it or use one of: source, path, mode"),
        "{e}"
    );
    let e = err("[agents.kit]\nuid = 1200\nsudo.commands = [{ arg = [\"x\"] }]\n");
    assert!(
        e.contains("agents.kit.sudo.commands[0].arg: unknown key `arg`"),
        "{e}"
    );
    let e = err("[cloud]\nimage = \"x\"\n");
    assert!(e.contains("cloud.image: unknown key `image`"), "{e}");
}

#[test]
fn the_prompt_names_the_agents_devices() {
    let town = toml(
        "[agents.kit]\nuid = 1200\n[[agents.kit.devices]]\nsubsystem = \"tty\"\nattrs = { idVendor = \"0483\", idProduct = \"5740\" }\n",
    )
    .unwrap();
    let prompt = town.identity("kit").prompt();
    assert!(
        prompt.contains("## Hardware Access")
            && prompt.contains("- **tty**: idProduct=5740, idVendor=0483 (rw)"),
        "{prompt}"
    );
    assert!(!toml("[agents.kit]\nuid = 1200\n")
        .unwrap()
        .identity("kit")
        .prompt()
        .contains("Hardware"));
}
