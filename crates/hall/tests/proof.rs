//! "Is it root's beyond doubt?" proven on real files with real owners, modes,
//! ACLs and open descriptors, and the entry point's way of opening files:
//! magic links refused, canonical names verified. These chown files to
//! other uids and set ACLs, so they run as root (CI does).

use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nuketown_hall::entry::SAFE_PATH;
use nuketown_hall::files;
use nuketown_hall::proof::{self, candidates, prove_absolute, Assessment, Subject};
use nuketown_hall::protocol::Ask;
use nuketown_hall::trust::{Sources, Trust};

/// Uids with no account here: never trusted.
const AGENT_UID: u32 = 1996;
const OTHER_UID: u32 = 1995;
/// `daemon` (uid 1) on every Debian: a system account, trusted.
const SYSTEM_UID: u32 = 1;

fn root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests chown files to other users: run them as root (CI does)"
    );
}

fn trust() -> Trust {
    Trust::read(&Sources::default(), [AGENT_UID, OTHER_UID])
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

fn setfacl(args: &[&str], p: &Path) {
    let o = Command::new("setfacl")
        .args(args)
        .arg(p)
        .output()
        .expect("setfacl (apt acl)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Why `p` is not proven, or `None` when it is.
fn unproven(p: &Path) -> Option<String> {
    prove_absolute(&trust(), p.to_str().unwrap()).err()
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
fn root_files_in_root_directories_are_proven() {
    root();
    let (_d, _bin, prog) = tree();
    assert_eq!(unproven(&prog), None);
    assert_eq!(unproven(Path::new("/usr/bin/id")), None);
    let end = prove_absolute(&trust(), prog.to_str().unwrap()).unwrap();
    let st = std::fs::metadata(&prog).unwrap();
    assert_eq!(end.id(), Some((st.dev(), st.ino())));
}

#[test]
fn a_file_owned_by_anyone_but_root_or_a_system_account_is_not_proven() {
    root();
    let (_d, _bin, prog) = tree();
    chown(&prog, AGENT_UID);
    mode(&prog, 0o555);
    let why = unproven(&prog).expect("the owner can chmod it back");
    assert!(
        why.contains("owned by uid 1996") && why.contains("not root or a system account"),
        "{why}"
    );
    // A subordinate-looking or unknown uid is nobody's to trust either.
    chown(&prog, 100_005);
    assert!(unproven(&prog).is_some());
    // A system account of the host is.
    chown(&prog, SYSTEM_UID);
    assert_eq!(unproven(&prog), None);
}

#[test]
fn group_write_is_proven_only_for_a_system_group_of_system_accounts() {
    root();
    let (_d, _bin, prog) = tree();
    mode(&prog, 0o775);
    chgrp(&prog, AGENT_UID);
    assert!(unproven(&prog).unwrap().contains("gid 1996"));
    // A group with no name here: who is in it cannot be known.
    chgrp(&prog, 4321);
    assert!(unproven(&prog).is_some());
    chgrp(&prog, 0);
    assert_eq!(unproven(&prog), None);
    mode(&prog, 0o757);
    assert!(unproven(&prog).unwrap().contains("everyone may write"));
}

#[test]
fn acl_write_counts_and_the_mask_limits_it() {
    root();
    let (_d, _bin, prog) = tree();
    setfacl(&["-m", &format!("u:{AGENT_UID}:rwx")], &prog);
    assert!(unproven(&prog).unwrap().contains("may write the file"));
    // The mask takes the write away again.
    setfacl(&["-m", "m::rx"], &prog);
    assert_eq!(unproven(&prog), None);
    setfacl(&["-b"], &prog);
    setfacl(&["-m", &format!("g:{AGENT_UID}:rw")], &prog);
    assert!(unproven(&prog).is_some());
    setfacl(&["-b"], &prog);
    // A system account's entry is no agent's.
    setfacl(&["-m", &format!("u:{SYSTEM_UID}:rw")], &prog);
    assert_eq!(unproven(&prog), None);
}

#[test]
fn every_directory_on_the_way_is_proven_too() {
    root();
    let (d, bin, prog) = tree();
    chown(&bin, AGENT_UID);
    mode(&bin, 0o555);
    assert!(unproven(&prog).unwrap().contains("the directory"));
    chown(&bin, 0);
    mode(&bin, 0o755);
    chown(d.path(), AGENT_UID);
    assert!(unproven(&prog).is_some(), "two levels up");
    chown(d.path(), 0);
    setfacl(&["-m", &format!("u:{AGENT_UID}:rwx")], &bin);
    assert!(unproven(&prog).unwrap().contains("may write the directory"));
}

#[test]
fn links_are_followed_and_every_directory_they_pass_is_proven() {
    root();
    let (d, bin, prog) = tree();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    // A link the agent controls, to a root program.
    let link = home.join("tool");
    symlink(&prog, &link).unwrap();
    assert!(unproven(&link).is_some());
    // A root link, in a root directory, to a file in the agent's directory.
    let theirs = home.join("script");
    std::fs::write(&theirs, "").unwrap();
    let via = bin.join("via");
    symlink(&theirs, &via).unwrap();
    assert!(unproven(&via).is_some());
    // `..` out of the agent's directory at once: where it leads is root's.
    let dotdot = format!("{}/../bin/prog", home.display());
    assert!(prove_absolute(&trust(), &dotdot).is_ok());
    let sub = home.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let through = format!("{}/sub/../../bin/prog", home.display());
    assert!(
        prove_absolute(&trust(), &through).is_err(),
        "sub is looked up in the agent's directory"
    );
}

#[test]
fn sticky_directories_protect_roots_entries_but_not_new_names() {
    root();
    let (d, _bin, _prog) = tree();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    mode(&tmp, 0o1777);
    let roots = tmp.join("roots");
    std::fs::write(&roots, "").unwrap();
    mode(&roots, 0o644);
    assert_eq!(unproven(&roots), None);
    let own = tmp.join("own");
    std::fs::write(&own, "").unwrap();
    chown(&own, AGENT_UID);
    assert!(unproven(&own).is_some());
    // A name that is not there yet: anyone could make it (a link to /etc/shadow, say).
    assert!(unproven(&tmp.join("not-yet")).is_some());
    // The directory itself, named: anyone may add to it.
    assert!(unproven(&tmp).is_some());
}

#[test]
fn a_missing_file_in_a_root_directory_is_proven_absent() {
    root();
    let (_d, bin, _prog) = tree();
    let end = prove_absolute(&trust(), bin.join("nothing").to_str().unwrap()).unwrap();
    assert_eq!(end.id(), None);
}

/// A file the agent could once write and still holds open for writing is
/// not root's, whatever its owner and mode say now — however the
/// descriptor is held: open, passed over a socket and closed, or a shared
/// writable mapping.
#[test]
fn a_file_held_open_for_writing_is_not_proven() {
    use std::os::unix::net::UnixDatagram;
    root();
    let (_d, _bin, prog) = tree();
    let held = std::fs::OpenOptions::new().write(true).open(&prog).unwrap();
    assert!(unproven(&prog).unwrap().contains("held open for writing"));
    // Passed over a socket and closed here: the descriptor is in flight.
    let (a, b) = UnixDatagram::pair().unwrap();
    let fds = [std::os::fd::AsRawFd::as_raw_fd(&held)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&a),
        &[std::io::IoSlice::new(b"x")],
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(held);
    assert!(unproven(&prog).unwrap().contains("held open for writing"));
    drop((a, b));
    assert_eq!(unproven(&prog), None);
    // A shared writable mapping outlives its descriptor.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&prog)
        .unwrap();
    // Safety: a fresh mapping of our own file, unmapped below.
    let map = unsafe {
        nix::libc::mmap(
            std::ptr::null_mut(),
            1,
            nix::libc::PROT_WRITE,
            nix::libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(map, nix::libc::MAP_FAILED);
    drop(f);
    assert!(unproven(&prog).unwrap().contains("held open for writing"));
    // Safety: the mapping made above.
    unsafe { nix::libc::munmap(map, 1) };
    assert_eq!(unproven(&prog), None);
}

#[test]
fn devices_other_than_the_inert_ones_are_not_proven() {
    root();
    for inert in ["/dev/null", "/dev/zero", "/dev/urandom"] {
        assert_eq!(unproven(Path::new(inert)), None, "{inert}");
    }
    assert!(unproven(Path::new("/dev/tty")).is_some());
}

#[test]
fn strings_that_may_name_files() {
    let has = |arg: &str, s: &str| candidates(arg).iter().any(|c| c == s);
    assert!(has("install", "install"));
    // Each tail of a bundle of short flags: -sf/x is -s -f /x.
    assert!(has("-sf/abs/evil.mk", "/abs/evil.mk"));
    assert!(has("-fMakefile", "Makefile"));
    assert!(has("--file=/a/b", "/a/b"));
    assert!(has("@args.txt", "args.txt"), "a response file");
    assert!(has("if=/dev/sda", "/dev/sda"));
    assert!(has("host:/srv/x", "/srv/x"));
    assert!(has("a,/b", "/b"));
    assert!(has("PATH=/agents/ada/bin:/usr/bin", "/agents/ada/bin"));
    assert!(has(". /agents/ada/env; make", "/agents/ada/env"));
}

fn opened_ask(cwd: &Path, argv: &[&str]) -> Ask {
    let argv = argv.iter().map(|s| s.to_string()).collect();
    files::prepare(argv, cwd.to_str().unwrap(), "root", AGENT_UID)
        .unwrap()
        .ask
}

fn assess(cwd: &Path, argv: &[&str]) -> Assessment {
    proof::assess(&trust(), &opened_ask(cwd, argv), "/root").unwrap()
}

fn about(a: &Assessment, subject: fn(&Subject) -> bool) -> bool {
    a.findings.iter().any(|f| subject(&f.subject))
}

#[test]
fn a_request_is_proven_by_its_program_its_arguments_and_where_it_runs() {
    root();
    let (d, _bin, prog) = tree();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    let script = home.join("build.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    chown(&script, AGENT_UID);

    // From the agent's directory nothing is proven: whatever is read there is the agent's.
    let a = assess(&home, &["/bin/sh", "build.sh"]);
    assert!(a.human_only() && !a.grantable());
    assert!(about(&a, |s| *s == Subject::Cwd), "{a:?}");
    assert_eq!(a.args(), ["build.sh"], "the file it names is shown");
    assert!(a.warnings().iter().any(|w| w.contains("cd /")), "{a:?}");
    let a = assess(&home, &["/usr/bin/true"]);
    assert!(a.human_only(), "even with no argument: {a:?}");

    // From a root directory, a root program with root files and plain words: proven.
    let bin = prog.parent().unwrap();
    let a = assess(bin, &[prog.to_str().unwrap(), "/etc/hostname", "install"]);
    assert!(a.proven() && a.grantable(), "{a:?}");
    // From a root directory that holds the agent's (its whole tree may be read): not.
    assert!(assess(d.path(), &["/usr/bin/true"]).human_only());

    // An argument naming the agent's file.
    let a = assess(bin, &["/bin/sh", script.to_str().unwrap()]);
    assert_eq!(a.args(), [script.to_str().unwrap()]);

    // The program named through the agent's link: the file is root's, the way there is not.
    symlink(&prog, home.join("p")).unwrap();
    let a = proof::assess(&trust(), &opened_ask(&home, &["./p"]), "/root").unwrap();
    assert!(
        about(&a, |s| matches!(s, Subject::Typed(_))) && !about(&a, |s| *s == Subject::Program),
        "{a:?}"
    );
}

/// Arguments are proven from every directory the program may start from:
/// the working directory and every directory any argument names (`-C DIR`);
/// a relative path that climbs with `..` is never proven.
#[test]
fn arguments_are_proven_from_every_base_the_program_may_use() {
    root();
    let (d, _bin, _prog) = tree();
    // Root's: top/app/sub. The agent's: home/evil.mk.
    let top = d.path().join("top");
    std::fs::create_dir_all(top.join("app/sub")).unwrap();
    std::fs::write(top.join("app/sub/x"), "").unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    std::fs::write(home.join("evil.mk"), "").unwrap();
    chown(&home.join("evil.mk"), AGENT_UID);
    let app = top.join("app");
    let app_s = app.to_str().unwrap();
    let home_s = home.to_str().unwrap();

    let a = assess(&top, &["/usr/bin/env", "-C", app_s, "cat", "sub/x"]);
    assert!(a.proven(), "{a:?}");
    // A chain of relative directories (`-C app -C sub`), all root's.
    let a = assess(
        &top,
        &["/usr/bin/env", "-C", "app", "-C", "sub", "cat", "x"],
    );
    assert!(a.proven(), "{a:?}");
    // `evil.mk` from the directory `-C` names (the agent's), not from where it runs.
    let a = assess(&top, &["/usr/bin/env", "-C", home_s, "cat", "evil.mk"]);
    assert!(a.args().contains(&home_s.to_string()), "{a:?}");
    // Glued to its flag, the same.
    let glued = format!("-C{home_s}");
    let a = assess(&top, &["/usr/bin/env", &glued, "cat", "evil.mk"]);
    assert!(a.args().contains(&glued), "{a:?}");
    // Climbing never proves, even to a root file.
    let a = assess(
        &top,
        &["/usr/bin/env", "-C", app_s, "cat", "../../home/evil.mk"],
    );
    assert_eq!(a.args(), ["../../home/evil.mk"], "{a:?}");
    let a = assess(&top, &["/usr/bin/env", "-C", app_s, "cat", "../app/sub/x"]);
    assert_eq!(a.args(), ["../app/sub/x"], "{a:?}");
    // `~user` is the user's home, whoever expands it.
    let a = assess(&top, &["/usr/bin/cat", "~daemon/x"]);
    assert!(a.proven() || !a.args().is_empty(), "{a:?}");
}

/// What a program may read without naming it — the tree where it runs, or
/// a directory it is given — is proven whole: a subdirectory the agent
/// owns, or a root link to the agent's file, anywhere in it, is not root's.
#[test]
fn the_tree_a_program_may_read_is_proven_whole() {
    root();
    let (d, _bin, _prog) = tree();
    let app = d.path().join("app");
    std::fs::create_dir_all(app.join("src/deep")).unwrap();
    std::fs::write(app.join("src/deep/main.c"), "").unwrap();
    let app_s = app.to_str().unwrap();
    assert!(assess(&app, &["/usr/bin/true"]).proven());
    assert!(assess(d.path(), &["/usr/bin/env", "-C", app_s, "true"]).proven());
    // An agent's directory deep inside.
    let build = app.join("src/deep/build");
    std::fs::create_dir(&build).unwrap();
    chown(&build, AGENT_UID);
    let a = assess(&app, &["/usr/bin/true"]);
    assert!(about(&a, |s| *s == Subject::Cwd), "{a:?}");
    let a = assess(d.path(), &["/usr/bin/env", "-C", app_s, "true"]);
    assert_eq!(a.args(), [app_s], "{a:?}");
    std::fs::remove_dir(&build).unwrap();
    // A root link in it to the agent's file.
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, AGENT_UID);
    std::fs::write(home.join("cfg"), "").unwrap();
    symlink(home.join("cfg"), app.join("src/cfg")).unwrap();
    assert!(assess(&app, &["/usr/bin/true"]).human_only());
    std::fs::remove_file(app.join("src/cfg")).unwrap();
    assert!(assess(&app, &["/usr/bin/true"]).proven());
}

#[test]
fn a_script_is_proven_by_its_interpreters_too() {
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
    let a = assess(&bin, &[prog.to_str().unwrap()]);
    assert!(about(&a, |s| matches!(s, Subject::Interpreter(_))), "{a:?}");
    // An interpreter's arguments are proven as the request's.
    std::fs::write(&prog, format!("#!/bin/sh {}\n", home.join("rc").display())).unwrap();
    let a = assess(&bin, &[prog.to_str().unwrap()]);
    assert!(!a.args().is_empty(), "{a:?}");
    // `env NAME` runs what it finds on the fixed PATH: root's sh, proven.
    std::fs::write(&prog, "#!/usr/bin/env sh\necho hi\n").unwrap();
    assert!(assess(&bin, &[prog.to_str().unwrap()]).proven());
    // A script reads what lies beside it: an agent's directory there is not root's.
    std::fs::write(&prog, "#!/bin/sh\necho hi\n").unwrap();
    assert!(assess(&bin, &[prog.to_str().unwrap()]).proven());
    let lib = bin.join("lib");
    std::fs::create_dir(&lib).unwrap();
    chown(&lib, AGENT_UID);
    let a = assess(&bin, &[prog.to_str().unwrap()]);
    assert!(
        a.warnings()
            .iter()
            .any(|w| w.contains("is a script, and what lies beside it")),
        "{a:?}"
    );
    std::fs::remove_dir(&lib).unwrap();
    // A relative interpreter is relative to where it runs: never proven.
    std::fs::write(&prog, "#!bin/sh\n").unwrap();
    assert!(assess(&bin, &[prog.to_str().unwrap()]).human_only());
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

mod agrees_with_the_kernel {
    //! The walk resolves paths by hand; whatever it ends on must be what the
    //! kernel resolves, for any path through any tangle of links, `..` and
    //! `.` — or the hall would prove one file and the program open another.
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &["a", "b", "f", "l1", "l2", "l3", "..", ".", ""];
    const TARGETS: &[&str] = &[
        "a", "b", "f", "a/f", "../a", "..", ".", "l1", "l2", "a/..", "b/c", "missing", "f/", "a/",
        "l3/f",
    ];

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
            // Under /run (root's, 0755): `..` may climb out of the tree and still be proven.
            let d = tempfile::tempdir_in("/run").unwrap();
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
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
            let kernel = std::fs::metadata(if rel.is_empty() { top.clone() } else { top.join(&rel) })
                .ok()
                .map(|m| (m.dev(), m.ino()));
            // Everything here is root's: the walk must go all the way, and end where the kernel does.
            match proof::prove(&trust(), base.fd.as_fd(), &rel) {
                Ok(end) => prop_assert_eq!(end.id(), kernel, "{} with links {:?}", rel, links),
                Err(why) => prop_assert!(why.contains("too many"), "{}: {}", rel, why),
            }
        }
    }
}
