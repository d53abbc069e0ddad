//! The kids configuration language: the seed's configs, and bad inputs with positions.

use kids_core::{ClientClass, Config, ConfigError, Fsync, LogLevel, StoreKind, StoreRole};

fn conf(name: &str) -> String {
    let path = format!("{}/../examples/conf/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn seed_server_config() {
    let c = Config::parse("server.conf", &conf("server.conf")).expect("server.conf parses");
    assert_eq!(c.nlimits.len(), 1);
    let n = c.nlimits[0];
    assert_eq!(
        (n.class, n.hard, n.soft, n.soft_secs),
        (ClientClass::Pubsub, 32 << 20, 16 << 20, 600)
    );
    assert_eq!(
        (c.log.level, c.log.file.as_deref()),
        (Some(LogLevel::Info), Some("/data/log/kids.log"))
    );
    assert_eq!(
        (
            c.listen.host.as_deref(),
            c.listen.port,
            c.listen.socket.as_deref()
        ),
        (None, Some(3388), Some("/var/run/kids.sock"))
    );
    let s = c.store.expect("a store");
    assert_eq!(s.kind, StoreKind::File);
    assert_eq!(s.path.as_deref(), Some("/data/logs/[topic]/[date]"));
    assert_eq!(s.name.as_deref(), Some("[time].log"));
    assert_eq!(s.rotate_secs, Some(3600));
    assert!(s.topics.is_empty() && s.stores.is_empty());
}

#[test]
fn seed_agent_config() {
    let c = Config::parse("agent.conf", &conf("agent.conf")).expect("agent.conf parses");
    assert_eq!(
        (c.listen.host.as_deref(), c.listen.port),
        (Some("127.0.0.1"), Some(3388))
    );
    assert_eq!(c.log.file.as_deref(), Some("/data/log/kids/kids.log"));
    let s = c.store.clone().expect("a store");
    assert_eq!((s.kind, s.stores.len()), (StoreKind::Buffer, 2));
    let (p, sec) = (&s.stores[0], &s.stores[1]);
    assert_eq!(
        (p.kind, p.role, p.host.as_deref(), p.port),
        (
            StoreKind::Network,
            Some(StoreRole::Primary),
            Some("kids"),
            Some(3388)
        )
    );
    assert_eq!(
        (sec.kind, sec.role, sec.path.as_deref(), sec.rotate_secs),
        (
            StoreKind::File,
            Some(StoreRole::Secondary),
            Some("/data/data/kidsbuf"),
            Some(300)
        )
    );
    // The typed value is serde-serializable and round-trips.
    let json = serde_json::to_string(&c).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Config>(&json).expect("deserialize"),
        c
    );
}

#[test]
fn the_originals_traps_are_fixed() {
    let c = Config::parse(
        "t.conf",
        "IGNORE_CASE on; # comment\nStore File {\n  PATH \"/data/with space/[topic]\";\n  topic 'a.*' b;\n  topic c;\n  ROTATE daily; flush 1s; fsync 100; utc_offset -5h;\n}\n",
    )
    .expect("parses");
    assert!(c.ignore_case);
    let s = c.store.expect("store");
    assert_eq!(
        s.path.as_deref(),
        Some("/data/with space/[topic]"),
        "quotes are not part of the value"
    );
    assert_eq!(s.topics, ["a.*", "b", "c"], "every topic line counts");
    assert_eq!(
        (s.rotate_secs, s.flush_secs, s.utc_offset_secs),
        (Some(86_400), Some(1), Some(-18_000))
    );
    assert_eq!(s.fsync, Some(Fsync::Every(100)));
    for (value, want) in [
        ("never", Fsync::Never),
        ("ROTATE", Fsync::OnRotate),
        ("1", Fsync::Every(1)),
    ] {
        let c = Config::parse(
            "t.conf",
            &format!("store file {{ path /x; fsync {value}; }}"),
        )
        .expect("parses");
        assert_eq!(c.store.expect("store").fsync, Some(want), "fsync {value}");
    }
}

#[test]
fn the_http_block_sets_the_explorer() {
    let c = Config::parse("t.conf", "http { port 8080; token \"s3 cret\"; }").expect("parses");
    assert_eq!(c.http.port, Some(8080));
    assert_eq!(c.http.token.as_deref(), Some("s3 cret"));
    let none = Config::parse("t.conf", "listen { port 1; }").expect("parses");
    assert_eq!((none.http.port, none.http.token), (None, None));
}

#[test]
fn bad_inputs_name_line_column_and_expectation() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "http { prot 80; }",
            1,
            8,
            "unknown key `prot` in `http` (did you mean `port`?)",
        ),
        ("http { port 80000; }", 1, 13, "expected a port number"),
        (
            "listen { port 3388 }",
            1,
            20,
            "expected `;` after the value of `port`, found `}`",
        ),
        (
            "listen { prot 3388; }",
            1,
            10,
            "unknown key `prot` in `listen` (did you mean `port`?)",
        ),
        (
            "lsiten { port 1; }",
            1,
            1,
            "unknown directive `lsiten` (did you mean `listen`?)",
        ),
        (
            "store file {\n  path /x;\n  rotae 5min;\n}",
            3,
            3,
            "unknown key `rotae` in the store (did you mean `rotate`?)",
        ),
        (
            "store file { path /x; rotate 5; }",
            1,
            30,
            "`5` needs a time unit",
        ),
        (
            "nlimit pubsub 32 16MB 10min;",
            1,
            15,
            "`32` needs a size unit",
        ),
        (
            "nlimit pubsub 32MB 16MB;",
            1,
            1,
            "`nlimit` expects CLASS HARD SOFT SECONDS",
        ),
        (
            "nlimit slow 1mb 1mb 1s;",
            1,
            8,
            "`nlimit` class is normal or pubsub",
        ),
        ("store disk { }", 1, 7, "unknown store type `disk`"),
        ("store file { }", 1, 1, "`store file` needs a `path`"),
        (
            "store network { port 1; }",
            1,
            1,
            "`store network` needs a `host`",
        ),
        (
            "store file { path /x; host h; }",
            1,
            23,
            "`host` does not apply to a `store file`",
        ),
        (
            "store buffer { store null primary { } }",
            1,
            1,
            "exactly one `primary` and one `secondary`",
        ),
        (
            "store file primary { path /x; }",
            1,
            1,
            "primary/secondary only apply to the stores inside `store buffer`",
        ),
        (
            "store multiple { store null primary { } }",
            1,
            18,
            "primary/secondary only apply",
        ),
        (
            "store null { store null { } }",
            1,
            14,
            "a `store null` holds no other stores",
        ),
        (
            "store null { }\nstore null { }",
            2,
            1,
            "a second top-level store",
        ),
        (
            "log { level loud; }",
            1,
            13,
            "`level` expects trace, debug, info, warn or error",
        ),
        ("listen { port 70000; }", 1, 15, "expected a port number"),
        (
            "listen { host \"unterminated; }",
            1,
            15,
            "unterminated \"-quoted value",
        ),
        (
            "worker_threads 0;",
            1,
            16,
            "`worker_threads` must be at least 1",
        ),
        ("worker_threads two;", 1, 16, "expects a whole number"),
        ("listen { host a b; }", 1, 17, "`host` takes one value"),
        (
            "log { level info; ",
            1,
            19,
            "expected a key or `}` in `log`, found end of file",
        ),
        (
            "store file { path /x; success any; }",
            1,
            23,
            "`success` does not apply",
        ),
        (
            "queue 100 drop;",
            1,
            11,
            "`queue` policy is block, error or spool",
        ),
        (
            "queue 100 spool;",
            1,
            11,
            "`queue SIZE spool` needs the spool's directory",
        ),
        (
            "queue 100 block /x;",
            1,
            17,
            "only the `spool` policy takes a directory",
        ),
        (
            "store file { path /x; fsync 0; }",
            1,
            29,
            "`fsync` expects never, rotate or a number of messages",
        ),
        (
            "store file { path /x; flush 1fortnight; }",
            1,
            29,
            "unknown time unit in `1fortnight`",
        ),
        (
            "nlimit pubsub 1tb 0 0;",
            1,
            15,
            "unknown size unit in `1tb`",
        ),
        (
            "ignore_case maybe;",
            1,
            13,
            "`ignore_case` expects on or off",
        ),
        ("listen { port; }", 1, 14, "`port` needs a value"),
        (
            "store multiple { store null { } success some; }",
            1,
            41,
            "`success` expects any or all",
        ),
        (
            "nlimit pubsub -5mb 0 0;",
            1,
            15,
            "expected a number and a size unit (b, k, kb, m, mb, g or gb), found `-5mb`",
        ),
        (
            "log { levle info; }",
            1,
            7,
            "unknown key `levle` in `log` (did you mean `level`?)",
        ),
        (
            "store fiel { path /x; }",
            1,
            7,
            "unknown store type `fiel` (did you mean `file`?); expected one of file, network, buffer, priority, multiple, null",
        ),
        (
            "store buffer { store null primary { } store file backup { path /x; } }",
            1,
            50,
            "expected primary, secondary or `{` after the store type, found `backup`",
        ),
        (
            "store buffer {\n  store null primary { }\n  store file secondary { path /spool; name x.log; }\n}",
            3,
            3,
            "`name`, `flush` and `utc_offset` do not apply to it",
        ),
    ];
    for &(src, line, col, msg) in cases {
        match Config::parse("bad.conf", src) {
            Err(ConfigError {
                file,
                line: l,
                col: c,
                message,
            }) => {
                assert_eq!(
                    (file.as_str(), l, c),
                    ("bad.conf", line, col),
                    "position for {src:?}: {message}"
                );
                assert!(message.contains(msg), "{src:?}: {message:?} lacks {msg:?}");
            }
            Ok(c) => panic!("{src:?} parsed: {c:?}"),
        }
    }
    let e = Config::parse("bad.conf", "listen { prot 1; }").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad.conf:1:10: unknown key `prot` in `listen` (did you mean `port`?)"
    );
}

#[test]
fn every_directive_unit_and_value_form_parses() {
    let c = Config::parse(
        "all.conf",
        "worker_threads 4; max_clients 1000; ignore_case off;\n\
         nlimit normal 1b 2k 3s; nlimit pubsub 4kb 5m 6sec;\n\
         log { level WARNING; file /var/log/kids.log; }\n\
         listen { host 0.0.0.0; port 3388; socket /tmp/kids.sock; }\n\
         store priority {\n\
           store network { socket /tmp/central.sock; window 64; timeout 2m; topic web*; }\n\
           store multiple { success any; store null { } }\n\
           store multiple { success ALL; store file { path /x; rotate hourly; flush 1min; } }\n\
         }",
    )
    .expect("parses");
    assert_eq!(
        (c.worker_threads, c.max_clients, c.ignore_case),
        (Some(4), Some(1000), false)
    );
    let n: Vec<_> = c
        .nlimits
        .iter()
        .map(|l| (l.class, l.hard, l.soft, l.soft_secs))
        .collect();
    assert_eq!(
        n,
        [
            (ClientClass::Normal, 1, 2 << 10, 3),
            (ClientClass::Pubsub, 4 << 10, 5 << 20, 6)
        ]
    );
    assert_eq!(c.log.level, Some(LogLevel::Warn));
    let s = c.store.expect("store");
    let net = &s.stores[0];
    assert_eq!(
        (
            net.socket.as_deref(),
            net.window,
            net.timeout_secs,
            net.topics.as_slice()
        ),
        (
            Some("/tmp/central.sock"),
            Some(64),
            Some(120),
            &["web*".to_string()][..]
        )
    );
    assert_eq!(s.stores[1].success, Some(kids_core::Success::Any));
    assert_eq!(s.stores[2].success, Some(kids_core::Success::All));
    let file = &s.stores[2].stores[0];
    assert_eq!((file.rotate_secs, file.flush_secs), (Some(3600), Some(60)));
    // The remaining units: sizes 1024-based and 64-bit, durations.
    for (text, want) in [
        ("1mb", 1u64 << 20),
        ("3g", 3 << 30),
        ("8gb", 8 << 30),
        ("2k", 2048),
    ] {
        let c = Config::parse("u.conf", &format!("nlimit pubsub {text} 0 0;")).expect(text);
        assert_eq!(c.nlimits[0].hard, want, "{text}");
    }
    for (text, want) in [
        ("7s", 7u64),
        ("2min", 120),
        ("3h", 10_800),
        ("1hour", 3600),
        ("2d", 172_800),
        ("1day", 86_400),
    ] {
        let c = Config::parse("u.conf", &format!("nlimit pubsub 0 0 {text};")).expect(text);
        assert_eq!(c.nlimits[0].soft_secs, want, "{text}");
    }
}

#[test]
fn quoted_values_keep_every_backslash_but_the_escapes_of_the_quote_and_itself() {
    let c = Config::parse(
        "q.conf",
        r#"store file { path "/a \"b\" c"; topic "web\*" 'it\'s' "x\\y" "t\n"; }"#,
    )
    .expect("parses");
    let s = c.store.expect("store");
    assert_eq!(s.path.as_deref(), Some(r#"/a "b" c"#));
    // `\*` stays a glob escape (a literal star), as it is unquoted.
    assert_eq!(s.topics, [r"web\*", "it's", r"x\y", r"t\n"]);
}

#[test]
fn a_deserialized_store_tree_is_checked_as_a_parsed_one() {
    use kids_core::{Bell, build_store};
    let json = r#"{"kind":"buffer","role":null,"topics":[],"path":null,"name":null,"rotate_secs":null,"flush_secs":null,"fsync":null,"utc_offset_secs":null,"host":null,"port":null,"socket":null,"window":null,"timeout_secs":null,"replay_rate":null,"success":null,"stores":[]}"#;
    let tree: kids_core::StoreConfig = serde_json::from_str(json).expect("deserializes");
    let err = build_store(&tree, false, &std::sync::Arc::new(Bell::default()))
        .map(|_| ())
        .expect_err("a buffer without stores");
    assert!(
        matches!(
            &err,
            kids_core::Error::StoreConfig(kids_core::StoreProblem::BufferRoles)
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid store configuration: `store buffer` needs exactly one `primary` and one `secondary` store"
    );
}

#[test]
fn connection_bounds_come_from_the_file() {
    use std::time::Duration;
    let c = Config::parse(
        "t.conf",
        "timeout 10s; request_timeout 2min; max_buffered 1gb;",
    )
    .expect("parses");
    assert_eq!(
        (c.timeout_secs, c.request_timeout_secs, c.max_buffered),
        (Some(10), Some(120), Some(1 << 30))
    );
    let conn = c.conn_config();
    assert_eq!(conn.idle_timeout_value(), Some(Duration::from_secs(10)));
    assert_eq!(conn.request_timeout_value(), Some(Duration::from_secs(120)));
    // 0 turns a timeout off; without the lines the toolkit's defaults hold.
    let off = Config::parse("t.conf", "timeout 0; request_timeout 0;").expect("parses");
    assert_eq!(off.conn_config().idle_timeout_value(), None);
    assert_eq!(off.conn_config().request_timeout_value(), None);
    let none = Config::parse("t.conf", "").expect("parses");
    assert_eq!(none.conn_config(), kids_core::server::ConnConfig::default());
    let err = Config::parse("t.conf", "timeout ten;").expect_err("not a duration");
    assert!(err.to_string().contains("time unit"), "{err}");
}
