//! The line protocol on its own: what parses, what is refused, and (with
//! proptest) that no input makes the parsers panic and that what approvers
//! are shown is unambiguous. A longer run: see docs/protocol.md.

use nuketown_hall::protocol::*;
use proptest::prelude::*;

fn file(path: &str, ino: u64) -> FileRef {
    FileRef {
        path: path.into(),
        dev: 2049,
        ino,
    }
}

fn ask(argv: Vec<String>, cwd: &str, user: &str, uid: u32) -> Ask {
    Ask {
        program: file(&argv[0], 7),
        argv,
        typed: None,
        cwd: file(cwd, 9),
        user: user.into(),
        group: None,
        sudo_uid: uid,
    }
}

fn ask_line(argv: &[&str]) -> Vec<u8> {
    encode(&FromRequester::Request {
        v: VERSION,
        ask: ask(
            argv.iter().map(|s| s.to_string()).collect(),
            "/agents/ada",
            "root",
            1100,
        ),
    })
}

/// A request line with `argv`, `program` and `cwd` paths as given (and `extra` fields).
fn raw(v: u32, argv: &str, program: &str, cwd: &str, user: &str, extra: &str) -> Vec<u8> {
    format!("{{\"type\":\"request\",\"v\":{v},\"argv\":{argv},\"program\":{{\"path\":\"{program}\",\"dev\":1,\"ino\":2}},\"cwd\":{{\"path\":\"{cwd}\",\"dev\":1,\"ino\":3}},\"user\":\"{user}\",\"sudo_uid\":1{extra}}}").into_bytes()
}

#[test]
fn a_request_round_trips() {
    let line = ask_line(&["/usr/bin/apt", "install", "ripgrep"]);
    assert_eq!(
        String::from_utf8(line.clone()).unwrap(),
        "{\"type\":\"request\",\"v\":2,\"argv\":[\"/usr/bin/apt\",\"install\",\"ripgrep\"],\"program\":{\"path\":\"/usr/bin/apt\",\"dev\":2049,\"ino\":7},\"cwd\":{\"path\":\"/agents/ada\",\"dev\":2049,\"ino\":9},\"user\":\"root\",\"sudo_uid\":1100}\n"
    );
    match parse_requester(&line).unwrap() {
        FromRequester::Request { v, ask } => {
            assert_eq!(v, 2);
            assert_eq!(ask.argv, ["/usr/bin/apt", "install", "ripgrep"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_requests_are_refused() {
    let t = r#"["/bin/true"]"#;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "malformed"),
        (b"{not json}".to_vec(), "malformed"),
        (b"\xff\xfe".to_vec(), "malformed"),
        (raw(1, t, "/bin/true", "/", "root", ""), "version 1"),
        (raw(2, "[]", "/bin/true", "/", "root", ""), "argv must have"),
        (raw(2, r#"["true"]"#, "true", "/", "root", ""), "canonical"),
        (raw(2, t, "/usr/bin/true", "/", "root", ""), "argv[0] must be program.path"),
        (raw(2, r#"["/bin/../bin/true"]"#, "/bin/../bin/true", "/", "root", ""), "canonical"),
        (raw(2, r#"["/bin//true"]"#, "/bin//true", "/", "root", ""), "canonical"),
        (raw(2, r#"["/bin/echo","a\u0000b"]"#, "/bin/echo", "/", "root", ""), "NUL"),
        (raw(2, t, "/bin/true", "rel", "root", ""), "cwd"),
        (raw(2, t, "/bin/true", "/tmp/./x", "root", ""), "cwd"),
        (raw(2, t, "/bin/true", "/", "", ""), "empty"),
        (raw(2, t, "/bin/true", "/", "root", ",\"admin\":true"), "unknown field"),
        (raw(2, t, "/bin/true", "/", "root", ",\"typed\":\"a\\u0000\""), "NUL"),
        (raw(2, r#""/bin/true""#, "/bin/true", "/", "root", ""), "malformed"),
        (b"{\"type\":\"request\",\"v\":2,\"argv\":[\"/bin/true\"],\"cwd\":\"/\",\"user\":\"root\",\"sudo_uid\":1}".to_vec(), "malformed"),
        (b"{\"type\":\"exit\",\"v\":2,\"id\":\"../../x\",\"status\":0}".to_vec(), "request id"),
        ([raw(2, t, "/bin/true", "/", "root", ""), b"\n{\"type\":\"exit\"}".to_vec()].concat(), "more than one line"),
    ];
    for (line, why) in cases {
        let e = parse_requester(&line).expect_err(&String::from_utf8_lossy(&line));
        assert!(
            e.to_string().contains(why),
            "{:?}: {e} (wanted {why})",
            String::from_utf8_lossy(&line)
        );
    }
}

#[test]
fn an_oversized_line_is_refused_before_it_is_parsed() {
    let mut big = ask_line(&["/bin/echo", &"x".repeat(MAX_LINE)]);
    assert!(big.len() > MAX_LINE);
    assert_eq!(parse_requester(&big), Err(ProtocolError::TooLong));
    big.truncate(MAX_LINE);
    assert!(parse_requester(&big).is_err());
}

#[test]
fn approver_messages_parse_and_are_checked() {
    let id = "0123456789abcdef0123456789abcdef";
    let ok = format!("{{\"type\":\"decide\",\"v\":2,\"id\":\"{id}\",\"agent\":\"ada\",\"argv\":[\"/usr/bin/id\"],\"approve\":true,\"grant_secs\":600,\"channel\":\"terminal\"}}");
    match parse_approver(ok.as_bytes()).unwrap() {
        FromApprover::Decide {
            grant_secs,
            approve,
            ..
        } => {
            assert_eq!(grant_secs, Some(600));
            assert!(approve);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_approver(b"{\"type\":\"watch\",\"v\":2}"),
        Ok(FromApprover::Watch { channel: None, .. })
    ));
    assert!(matches!(
        parse_approver(b"{\"type\":\"list\",\"v\":2}"),
        Ok(FromApprover::List { .. })
    ));
    for bad in [
        ok.replace(id, "0123"),
        ok.replace(id, &id.to_uppercase()),
        ok.replace("\"terminal\"", "\"\""),
        ok.replace("\"terminal\"", "\"term\\ninal\""),
        ok.replace("\"v\":2", "\"v\":1"),
        ok.replace("\"approve\":true", "\"approve\":\"yes\""),
        ok.replace("\"argv\":[\"/usr/bin/id\"]", "\"argv\":[]"),
        "{\"type\":\"approve_all\",\"v\":2}".into(),
    ] {
        assert!(parse_approver(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn hall_messages_round_trip() {
    let m = ToApprover::Error {
        id: Some("0123456789abcdef0123456789abcdef".into()),
        message: "no".into(),
    };
    assert_eq!(parse_to_approver(&encode(&m)).unwrap(), m);
    let d = ToRequester::Decision {
        id: "0123456789abcdef0123456789abcdef".into(),
        approved: false,
        by: DecidedBy {
            who: "josh".into(),
            channel: "terminal".into(),
        },
        reason: "denied by josh via terminal".into(),
        mock: false,
    };
    assert_eq!(parse_to_requester(&encode(&d)).unwrap(), d);
}

#[test]
fn display_escapes_what_could_mislead() {
    let argv: Vec<String> = vec![
        "/bin/echo".into(),
        "two\nlines".into(),
        "say \"hi\" \\ bye".into(),
        "\x1b[2Jcleared".into(),
        "rev\u{202e}ersed".into(),
        "p\u{0430}ypal".into(),
        "<b>bold</b> & more".into(),
        "".into(),
    ];
    let shown = show_argv(&argv);
    assert_eq!(
        shown,
        r#""/bin/echo" "two\nlines" "say \"hi\" \\ bye" "\u{1b}[2Jcleared" "rev\u{202e}ersed" "p\u{430}ypal" "<b>bold</b> & more" """#
    );
    assert!(!shown.contains('\n') && !shown.chars().any(|c| !(' '..='~').contains(&c)));
}

/// Split a shown argv back into its quoted elements (the inverse of join).
fn split_shown(shown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in shown.chars() {
        cur.push(c);
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
            if !in_quotes {
                out.push(std::mem::take(&mut cur));
            }
        } else if c == ' ' && !in_quotes {
            cur.pop();
        }
    }
    out
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic a parser.
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_requester(&bytes);
        let _ = parse_approver(&bytes);
        let _ = parse_to_requester(&bytes);
        let _ = parse_to_approver(&bytes);
        let _ = parse_asker(&bytes);
    }

    /// Near-miss ask-socket messages (network and the relay's resources
    /// request, one byte changed) never panic, and what parses is within
    /// the limits the hall relies on.
    #[test]
    fn mutated_asker_messages_are_parsed_or_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>(),
                                                    agent in "[a-z]{1,70}", tier in ".{0,70}", reason in ".{0,40}") {
        for msg in [
            FromAsker::Resources { v: VERSION, agent: agent.clone(), tier: tier.clone(), current: "small".into(), reason: reason.clone(), origin: "ConfigMap x/y".into() },
            FromAsker::Network { v: VERSION, target: tier.clone(), secs: 60, reason: reason.clone() },
            FromAsker::Tool { v: VERSION, cli: "claude-code".into(), tool: agent.clone(), input: serde_json::json!({ "command": reason.clone() }).to_string() },
            FromAsker::Credential { v: VERSION, credential: agent.clone(), reason: reason.clone() },
        ] {
            let mut line = encode(&msg);
            let i = pos.index(line.len());
            line[i] = byte;
            match parse_asker(&line) {
                Ok(FromAsker::Resources { v, agent, tier, current, reason, origin }) => {
                    prop_assert_eq!(v, VERSION);
                    for s in [&agent, &tier, &current] {
                        prop_assert!(!s.is_empty() && s.len() <= 64 && !s.contains('\0'));
                    }
                    prop_assert!(reason.len() <= MAX_REASON && origin.len() <= MAX_REASON);
                }
                Ok(FromAsker::Network { target, secs, .. }) => {
                    prop_assert!(!target.is_empty() && target.len() <= 300);
                    prop_assert!((1..=86_400).contains(&secs));
                }
                Ok(FromAsker::Tool { v, cli, tool, input }) => {
                    prop_assert_eq!(v, VERSION);
                    prop_assert!(!cli.is_empty() && cli.len() <= 64 && !tool.is_empty() && tool.len() <= 256);
                    prop_assert!(input.len() <= MAX_TOOL_INPUT);
                    prop_assert!(serde_json::from_str::<serde_json::Value>(&input).is_ok());
                }
                Ok(FromAsker::Credential { v, credential, reason }) => {
                    prop_assert_eq!(v, VERSION);
                    prop_assert!(!credential.is_empty() && credential.len() <= 32 && !credential.contains('\0'));
                    prop_assert!(reason.len() <= MAX_REASON);
                }
                Err(_) => {}
            }
        }
    }

    /// Near-miss JSON (a valid message with one byte changed) never panics, and what parses is checked.
    #[test]
    fn mutated_messages_are_parsed_or_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>(),
                                              argv in proptest::collection::vec(".*", 1..6)) {
        let mut argv = argv;
        argv[0] = format!("/{}", argv[0]);
        let mut line = encode(&FromRequester::Request { v: VERSION, ask: ask(argv, "/", "root", 1) });
        let i = pos.index(line.len());
        line[i] = byte;
        if let Ok(FromRequester::Request { ask, v }) = parse_requester(&line) {
            prop_assert_eq!(v, VERSION);
            prop_assert!(ask.argv[0].starts_with('/'));
            prop_assert!(ask.argv.iter().all(|a| !a.contains('\0')));
        }
    }

    /// Every valid request survives encode → parse unchanged, whatever its strings hold.
    #[test]
    fn requests_round_trip(argv in proptest::collection::vec("[^\u{0}]*", 1..8), prog in "(/[^\u{0}/]*[^\u{0}/.][^\u{0}/]*){1,4}", cwd in "(/[a-z]+){0,3}", user in "[^\u{0}]+", uid in any::<u32>()) {
        let mut argv = argv;
        argv[0] = prog;
        let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
        let ask = ask(argv, &cwd, &user, uid);
        let line = encode(&FromRequester::Request { v: VERSION, ask: ask.clone() });
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one message is one line");
        if line.len() <= MAX_LINE {
            prop_assert_eq!(parse_requester(&line).unwrap(), FromRequester::Request { v: VERSION, ask });
        }
    }

    /// What approvers see is one line of printable ASCII, and reads back as exactly the argv.
    #[test]
    fn display_is_one_line_and_unambiguous(argv in proptest::collection::vec(any::<String>(), 1..6)) {
        let shown = show_argv(&argv);
        prop_assert!(shown.chars().all(|c| (' '..='~').contains(&c)), "{shown:?}");
        let back: Vec<String> = split_shown(&shown).iter().map(|e| unshow_str(e).unwrap()).collect();
        prop_assert_eq!(back, argv);
    }
}
