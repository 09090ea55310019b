//! "Can the agent change it?" judged on real files with real owners, modes
//! and ACLs, and the entry point's way of opening files: magic links refused,
//! canonical names verified. These chown files to other uids and set ACLs,
//! so they run as root (CI does).

use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nuketown_hall::changeable::{self, candidates, walk_absolute, Identity};
use nuketown_hall::entry::SAFE_PATH;
use nuketown_hall::files;
use nuketown_hall::protocol::Ask;

const AGENT_UID: u32 = 1996;

fn root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests chown files to other users: run them as root (CI does)"
    );
}

fn agent() -> Identity {
    Identity {
        users: vec![(AGENT_UID, "ada".into())],
        gids: vec![AGENT_UID],
    }
}

const OTHER_UID: u32 = 1995;

/// ada and vox, as the hall judges a request: every agent of the town.
fn agents() -> Identity {
    Identity {
        users: vec![(AGENT_UID, "ada".into()), (OTHER_UID, "vox".into())],
        gids: vec![AGENT_UID, OTHER_UID],
    }
}

fn chown(p: &Path, uid: u32) {
    nix::unistd::chown(p, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

fn chgrp(p: &Path, gid: u32) {
    nix::unistd::chown(p, None, Some(nix::unistd::Gid::from_raw(gid))).unwrap();
}

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn changes(p: &Path) -> Option<String> {
    walk_absolute(&agent(), p.to_str().unwrap()).why
}

/// A root-owned tree: top/bin/prog (0755), all directories 0755.
fn tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    mode(dir.path(), 0o755);
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let prog = bin.join("prog");
    std::fs::write(&prog, "#!/bin/sh\n").unwrap();
    mode(&prog, 0o755);
    (dir, bin, prog)
}

#[test]
fn root_files_in_root_directories_are_safe() {
    root();
    let (_d, _bin, prog) = tree();
    assert_eq!(changes(&prog), None);
    assert_eq!(changes(Path::new("/usr/bin/id")), None);
    let w = walk_absolute(&agent(), prog.to_str().unwrap());
    let st = std::fs::metadata(&prog).unwrap();
    assert_eq!(
        w.end,
        Some((
            std::os::unix::fs::MetadataExt::dev(&st),
            std::os::unix::fs::MetadataExt::ino(&st)
        ))
    );
}

#[test]
fn an_owner_can_always_change_its_file_whatever_the_mode() {
    root();
    let (_d, _bin, prog) = tree();
    chown(&prog, AGENT_UID);
    mode(&prog, 0o555);
    let why = changes(&prog).expect("the owner can chmod it back");
    assert!(why.contains("ada owns the file"), "{why}");
}

#[test]
fn group_write_counts_when_the_agent_is_in_the_group() {
    root();
    let (_d, _bin, prog) = tree();
    chgrp(&prog, AGENT_UID);
    mode(&prog, 0o775);
    assert!(changes(&prog).unwrap().contains("may write the file"));
    mode(&prog, 0o755);
    assert_eq!(changes(&prog), None);
    chgrp(&prog, 4321);
    mode(&prog, 0o775);
    assert_eq!(
        changes(&prog),
        None,
        "another group's write bit is not the agent's"
    );
}

#[test]
fn acl_write_counts_and_the_mask_limits_it() {
    root();
    let (_d, _bin, prog) = tree();
    let setfacl = |spec: &str| {
        let o = Command::new("setfacl")
            .args(["-m", spec])
            .arg(&prog)
            .output()
            .expect("setfacl (apt acl)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    setfacl(&format!("u:{AGENT_UID}:rwx"));
    assert!(changes(&prog).unwrap().contains("may write the file"));
    // The mask takes the write away again.
    setfacl("m::rx");
    assert_eq!(changes(&prog), None);
    Command::new("setfacl")
        .arg("-b")
        .arg(&prog)
        .status()
        .unwrap();
    // A group entry for a group the agent is in.
    setfacl(&format!("g:{AGENT_UID}:rw"));
    assert!(changes(&prog).is_some());
}

#[test]
fn any_directory_on_the_way_that_the_agent_owns_or_may_write() {
    root();
    let (d, bin, prog) = tree();
    chown(&bin, AGENT_UID);
    mode(&bin, 0o555);
    assert!(changes(&prog).unwrap().contains("owns the directory"));
    chown(&bin, 0);
    mode(&bin, 0o755);
    // Two levels up.
    chown(d.path(), AGENT_UID);
    assert!(changes(&prog).is_some());
    chown(d.path(), 0);
    // A directory writable through an ACL.
    let o = Command::new("setfacl")
        .args(["-m", &format!("u:{AGENT_UID}:rwx")])
        .arg(&bin)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(changes(&prog).unwrap().contains("may write the directory"));
}

#[test]
fn links_are_followed_and_every_directory_they_pass_is_judged() {
    root();
    let (d, bin, prog) = tree();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    // A link the agent controls, to a safe program.
    let link = home.join("tool");
    symlink(&prog, &link).unwrap();
    assert!(changes(&link).is_some());
    // A root-owned link, in a root directory, to a file in the agent's directory.
    let theirs = home.join("script");
    std::fs::write(&theirs, "").unwrap();
    let via = bin.join("via");
    symlink(&theirs, &via).unwrap();
    assert!(changes(&via).is_some());
    // `..` through the agent's directory, even if it ends on a root file.
    let dotdot = format!("{}/../bin/prog", home.display());
    assert!(
        walk_absolute(&agent(), &dotdot).why.is_none(),
        "home itself is looked up in a root directory"
    );
    let sub = home.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let through = format!("{}/sub/../../bin/prog", home.display());
    assert!(
        walk_absolute(&agent(), &through).why.is_some(),
        "sub is looked up in the agent's directory"
    );
}

#[test]
fn sticky_directories_protect_others_files_but_not_new_names() {
    root();
    let (d, _bin, _prog) = tree();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    mode(&tmp, 0o1777);
    let roots = tmp.join("roots");
    std::fs::write(&roots, "").unwrap();
    mode(&roots, 0o644);
    assert_eq!(changes(&roots), None);
    let own = tmp.join("own");
    std::fs::write(&own, "").unwrap();
    chown(&own, AGENT_UID);
    assert!(changes(&own).is_some());
    // A name that is not there yet: the agent could create it (a link to /etc/shadow, say).
    assert!(changes(&tmp.join("not-yet")).is_some());
}

#[test]
fn a_missing_file_in_a_root_directory_is_nothing_of_the_agents() {
    root();
    let (_d, bin, _prog) = tree();
    let w = walk_absolute(&agent(), bin.join("nothing").to_str().unwrap());
    assert_eq!((w.end, w.why), (None, None));
}

#[test]
fn words_that_may_name_files() {
    assert_eq!(candidates("install"), ["install"]);
    assert_eq!(candidates("-f"), Vec::<&str>::new());
    assert_eq!(candidates("-fMakefile"), ["Makefile"]);
    assert_eq!(candidates("--file=/a/b"), ["/a/b"]);
    assert_eq!(candidates("--verbose"), Vec::<&str>::new());
    assert!(candidates("PATH=/agents/ada/bin:/usr/bin").contains(&"/agents/ada/bin"));
    let sh = candidates(". /agents/ada/env; make");
    assert!(sh.contains(&"/agents/ada/env"), "{sh:?}");
}

fn opened_ask(cwd: &Path, argv: &[&str]) -> Ask {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    files::prepare(argv, cwd.to_str().unwrap(), "root", AGENT_UID)
        .unwrap()
        .ask
}

#[test]
fn a_request_is_judged_by_its_program_its_arguments_and_where_it_runs() {
    root();
    let (d, _bin, prog) = tree();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    let script = home.join("build.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    chown(&script, AGENT_UID);

    // The script handed to sh, relative to the working directory.
    let a = changeable::assess(&agent(), &opened_ask(&home, &["/bin/sh", "build.sh"])).unwrap();
    assert!(a.human_only() && a.program.is_none());
    assert_eq!(a.args.len(), 1);
    assert!(a.cwd.is_some() && !a.grantable());
    assert!(a.warnings().iter().any(|w| w.contains("\"build.sh\"")));

    // A bare word that names nothing: not a file.
    let a = changeable::assess(&agent(), &opened_ask(&home, &["/bin/true", "install"])).unwrap();
    assert!(!a.human_only() && a.grantable() && a.cwd.is_some(), "{a:?}");

    // From a root directory, a root program with root files: clean and grantable.
    let a = changeable::assess(
        &agent(),
        &opened_ask(d.path(), &[prog.to_str().unwrap(), "/etc/hostname"]),
    )
    .unwrap();
    assert!(!a.human_only() && a.grantable(), "{a:?}");

    // The program named through the agent's link: the file is root's, the way there is not.
    symlink(&prog, home.join("p")).unwrap();
    let a = changeable::assess(&agent(), &opened_ask(&home, &["./p"])).unwrap();
    assert!(
        a.program.is_none() && a.typed.is_some() && a.human_only(),
        "{a:?}"
    );
}

#[test]
fn the_entry_point_refuses_magic_links_and_names_programs_canonically() {
    root();
    let root_dir = files::open_dir("/").unwrap();
    for magic in [
        "/proc/self/exe",
        "/proc/self/root/usr/bin/true",
        "/proc/self/cwd/usr/bin/true",
        "/dev/fd/0",
        "/dev/stdin",
    ] {
        let e = files::open_program(magic, root_dir.fd.as_fd(), SAFE_PATH).unwrap_err();
        assert!(
            e.contains("magic link") || e.contains("not an executable"),
            "{magic}: {e}"
        );
    }
    let pid = std::process::id();
    let e = files::open_program(
        &format!("/proc/{pid}/root/usr/bin/true"),
        root_dir.fd.as_fd(),
        SAFE_PATH,
    )
    .unwrap_err();
    assert!(e.contains("magic link"), "{e}");

    // A link to a real program is named by the file it reaches.
    let d = tempfile::tempdir().unwrap();
    symlink("/usr/bin/true", d.path().join("t")).unwrap();
    let dir = files::open_dir(d.path().to_str().unwrap()).unwrap();
    let p = files::open_program("./t", dir.fd.as_fd(), SAFE_PATH).unwrap();
    assert_eq!(
        p.file.path,
        std::fs::canonicalize("/usr/bin/true")
            .unwrap()
            .to_str()
            .unwrap()
    );

    // Not executable, or a directory: refused. A bare name is never looked for in the working directory.
    std::fs::write(d.path().join("tool"), "#!/bin/sh\n").unwrap();
    assert!(files::open_program("./tool", dir.fd.as_fd(), SAFE_PATH).is_err());
    mode(&d.path().join("tool"), 0o755);
    assert!(files::open_program("./tool", dir.fd.as_fd(), SAFE_PATH).is_ok());
    assert!(files::open_program("tool", dir.fd.as_fd(), SAFE_PATH).is_err());
    assert!(files::open_program("tool", dir.fd.as_fd(), "relative/dir").is_err());
    assert!(files::open_program(".", dir.fd.as_fd(), SAFE_PATH).is_err());
    assert!(
        files::open_program("no-such-program-here", dir.fd.as_fd(), SAFE_PATH)
            .unwrap_err()
            .contains("command not found")
    );
}

#[test]
fn a_file_replaced_after_it_was_opened_is_refused_by_the_hall() {
    root();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tool");
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    mode(&p, 0o755);
    let dir = files::open_dir(d.path().to_str().unwrap()).unwrap();
    let opened = files::open_program("./tool", dir.fd.as_fd(), SAFE_PATH).unwrap();
    assert!(files::reopen(&opened.file, "the program").is_ok());
    // Swapped for another file of the same name.
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, "#!/bin/sh\necho other\n").unwrap();
    let e = files::reopen(&opened.file, "the program").unwrap_err();
    assert!(e.contains("moved or replaced"), "{e}");
    // Swapped for a link to the same file: still refused (no link is followed).
    std::fs::remove_file(&p).unwrap();
    let real = d.path().join("real");
    std::fs::write(&real, "").unwrap();
    symlink(&real, &p).unwrap();
    assert!(files::reopen(&opened.file, "the program").is_err());
}

#[test]
fn another_agents_file_counts_as_much_as_the_requesters() {
    root();
    let (d, bin, prog) = tree();
    // vox plants a program ada will ask for: vox could change it later.
    chown(&prog, OTHER_UID);
    let w = walk_absolute(&agents(), prog.to_str().unwrap());
    assert!(w.why.unwrap().contains("vox owns the file"));
    assert_eq!(changes(&prog), None, "ada alone could not");
    chown(&prog, 0);
    // A directory group-writable by vox's group.
    chgrp(&bin, OTHER_UID);
    mode(&bin, 0o775);
    assert!(walk_absolute(&agents(), prog.to_str().unwrap())
        .why
        .unwrap()
        .contains("an agent of the town may write the directory"));
    mode(&bin, 0o755);
    assert_eq!(walk_absolute(&agents(), prog.to_str().unwrap()).why, None);
    drop(d);
}

mod agrees_with_the_kernel {
    //! The walk resolves paths by hand; whatever it ends on must be what the
    //! kernel resolves, for any path through any tangle of links, `..` and
    //! `.` — or the hall would judge one file and the program open another.
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::MetadataExt;

    const NAMES: &[&str] = &["a", "b", "f", "l1", "l2", "l3", "..", ".", ""];
    const TARGETS: &[&str] = &[
        "a", "b", "f", "a/f", "../a", "..", ".", "l1", "l2", "a/..", "b/c", "missing", "f/", "a/",
        "l3/f",
    ];

    /// Nobody who can change anything here: the walk must go all the way.
    fn nobody() -> Identity {
        Identity {
            users: vec![(4242, "nobody-test".into())],
            gids: vec![4242],
        }
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn walks_end_where_the_kernel_does(
            links in proptest::collection::vec(proptest::sample::select(TARGETS), 3),
            absolute in any::<bool>(),
            path in proptest::collection::vec(proptest::sample::select(NAMES), 1..7),
        ) {
            let d = tempfile::tempdir().unwrap();
            let top = d.path().join("t");
            std::fs::create_dir_all(top.join("a/b/c")).unwrap();
            std::fs::create_dir_all(top.join("b/c")).unwrap();
            std::fs::write(top.join("f"), "").unwrap();
            std::fs::write(top.join("a/f"), "").unwrap();
            for (i, target) in links.iter().enumerate() {
                let t = if absolute && i == 0 { format!("{}/{target}", top.display()) } else { target.to_string() };
                std::os::unix::fs::symlink(&t, top.join(format!("l{}", i + 1))).unwrap();
                std::os::unix::fs::symlink(&t, top.join(format!("a/l{}", i + 1))).unwrap();
            }
            let rel = path.join("/");
            let base = files::open_dir(top.to_str().unwrap()).unwrap();
            let w = changeable::walk(&nobody(), base.fd.as_fd(), &rel);
            let kernel = std::fs::metadata(if rel.is_empty() { top.clone() } else { top.join(&rel) })
                .ok()
                .map(|m| (m.dev(), m.ino()));
            if w.why.is_none() {
                prop_assert_eq!(w.end, kernel, "{} with links {:?}", rel, links);
            }
        }
    }
}

#[test]
fn a_script_is_judged_by_its_interpreter_too() {
    root();
    let (d, bin, prog) = tree();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    let interp = home.join("python");
    std::fs::write(&interp, "#!/bin/sh\n").unwrap();
    mode(&interp, 0o755);
    // A root script in a root directory, interpreted by the agent's program.
    std::fs::write(&prog, format!("#!{} -u\nprint(1)\n", interp.display())).unwrap();
    let a = changeable::assess(&agent(), &opened_ask(&bin, &[prog.to_str().unwrap()])).unwrap();
    let why = a.program.expect("the interpreter is the agent's");
    assert!(
        why.contains("its interpreter") && why.contains("owns the directory"),
        "{why}"
    );
    // A root interpreter: the script is root's alone.
    std::fs::write(&prog, "#!/bin/sh\necho ok\n").unwrap();
    let a = changeable::assess(&agent(), &opened_ask(&bin, &[prog.to_str().unwrap()])).unwrap();
    assert!(a.program.is_none(), "{a:?}");
    assert_eq!(
        changeable::interpreter_of(prog.to_str().unwrap()).as_deref(),
        Some("/bin/sh")
    );
    assert_eq!(
        changeable::interpreter_of("/usr/bin/true"),
        None,
        "not a script"
    );
}
