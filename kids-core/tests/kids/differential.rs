//! The same scripted sessions against a real redis-server and against kids,
//! replies compared byte for byte.

use bytes::Bytes;
use kids_core::{Frame, RouterConfig};

use super::support::{KidsServer, Raw, RedisServer, cmd};

/// One step of a script.
enum Step {
    /// Send bytes on a connection, then read that many frames from each listed connection.
    Send(usize, Vec<u8>, Vec<(usize, usize)>),
    /// As `Send`, but the reply is a HELLO map: server name, version and id are masked.
    Hello(usize, Vec<u8>),
    /// Send bytes on a connection, then read until the server closes it.
    Eof(usize, Vec<u8>),
}

use Step::{Eof, Hello, Send};

fn c(args: &[&str]) -> Vec<u8> {
    cmd(args)
}

fn inline(line: &str) -> Vec<u8> {
    format!("{line}\r\n").into_bytes()
}

/// What one step produced: per connection, the frames' exact bytes (or values when masked).
#[derive(Debug, PartialEq)]
enum Seen {
    Bytes(usize, Vec<u8>),
    Masked(usize, Frame),
}

fn mask(frame: Frame) -> Frame {
    let hide = |k: &Frame| matches!(k, Frame::Bulk(b) if [&b"server"[..], b"version", b"id"].contains(&&b[..]));
    match frame {
        Frame::Map(pairs) => Frame::Map(
            pairs
                .into_iter()
                .map(|(k, v)| if hide(&k) { (k, Frame::Null) } else { (k, v) })
                .collect(),
        ),
        Frame::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut hide_next = false;
            for (i, item) in items.into_iter().enumerate() {
                if hide_next {
                    out.push(Frame::Null);
                    hide_next = false;
                    continue;
                }
                hide_next = i % 2 == 0 && hide(&item);
                out.push(item);
            }
            Frame::Array(out)
        }
        other => other,
    }
}

fn run(port: u16, script: &[Step]) -> Vec<Seen> {
    let mut conns: Vec<Raw> = Vec::new();
    let mut seen = Vec::new();
    let conn = |conns: &mut Vec<Raw>, i: usize| -> usize {
        while conns.len() <= i {
            conns.push(Raw::connect(port));
        }
        i
    };
    for step in script {
        match step {
            Send(i, bytes, reads) => {
                let i = conn(&mut conns, *i);
                conns[i].send(bytes);
                for &(j, n) in reads {
                    let j = conn(&mut conns, j);
                    for _ in 0..n {
                        seen.push(Seen::Bytes(j, conns[j].frame().0));
                    }
                }
            }
            Hello(i, bytes) => {
                let i = conn(&mut conns, *i);
                conns[i].send(bytes);
                let (raw, frame) = conns[i].frame();
                seen.push(Seen::Bytes(i, raw[..1].to_vec()));
                seen.push(Seen::Masked(i, mask(frame)));
            }
            Eof(i, bytes) => {
                let i = conn(&mut conns, *i);
                conns[i].send(bytes);
                seen.push(Seen::Bytes(i, conns[i].until_eof()));
            }
        }
    }
    seen
}

fn compare(name: &str, script: &[Step]) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let kids = KidsServer::start(RouterConfig::default());
    let want = run(redis.port, script);
    let got = run(kids.port, script);
    for (k, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            g,
            w,
            "script {name}, reply {k}: kids vs redis (left kids)\n{}",
            show(g, w)
        );
    }
    assert_eq!(got.len(), want.len(), "script {name}: reply count");
}

fn show(g: &Seen, w: &Seen) -> String {
    match (g, w) {
        (Seen::Bytes(_, g), Seen::Bytes(_, w)) => {
            format!(
                "kids:  {}\nredis: {}",
                String::from_utf8_lossy(g).escape_debug(),
                String::from_utf8_lossy(w).escape_debug()
            )
        }
        _ => format!("{g:?}\n{w:?}"),
    }
}

#[test]
fn subscribe_and_unsubscribe_in_every_order() {
    compare(
        "subscribe",
        &[
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["SUBSCRIBE", "a", "b"]), vec![(0, 2)]),
            Send(0, c(&["PSUBSCRIBE", "a*"]), vec![(0, 1)]),
            Send(0, c(&["SUBSCRIBE", "a"]), vec![(0, 1)]),
            Send(0, c(&["UNSUBSCRIBE", "b", "nope"]), vec![(0, 2)]),
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE", "nope"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PING"]), vec![(0, 1)]),
            Send(0, c(&["PSUBSCRIBE", "p1", "p2", "p1"]), vec![(0, 3)]),
            Send(0, c(&["UNSUBSCRIBE", "x"]), vec![(0, 1)]),
            Send(0, c(&["SUBSCRIBE", "x"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE", "p2", "p1"]), vec![(0, 2)]),
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PING", "after"]), vec![(0, 1)]),
        ],
    );
}

#[test]
fn unsubscribing_from_everything_confirms_patterns_in_subscription_order() {
    compare(
        "punsubscribe order",
        &[
            Send(
                0,
                c(&["PSUBSCRIBE", "z*", "a*", "m*", "q?", "b*", "k[ab]", "0*"]),
                vec![(0, 7)],
            ),
            Send(0, c(&["PUNSUBSCRIBE", "m*"]), vec![(0, 1)]),
            Send(0, c(&["PSUBSCRIBE", "m*"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE"]), vec![(0, 7)]),
            Send(0, c(&["PING"]), vec![(0, 1)]),
        ],
    );
}

#[test]
fn publish_fan_out_and_subscribed_mode() {
    compare(
        "publish",
        &[
            Send(0, c(&["SUBSCRIBE", "news"]), vec![(0, 1)]),
            Send(1, c(&["PSUBSCRIBE", "n*"]), vec![(1, 1)]),
            Send(2, c(&["SUBSCRIBE", "news"]), vec![(2, 1)]),
            Send(2, c(&["PSUBSCRIBE", "ne?s"]), vec![(2, 1)]),
            Send(
                3,
                c(&["PUBLISH", "news", "hello"]),
                vec![(3, 1), (0, 1), (1, 1), (2, 2)],
            ),
            Send(3, c(&["PUBLISH", "other", "x"]), vec![(3, 1)]),
            Send(3, c(&["PUBLISH", "nope", "x"]), vec![(3, 1), (1, 1)]),
            Send(
                3,
                c(&["PUBLISH", "news", ""]),
                vec![(3, 1), (0, 1), (1, 1), (2, 2)],
            ),
            Send(3, c(&["PUBSUB", "NUMSUB", "news", "other"]), vec![(3, 1)]),
            Send(3, c(&["PUBSUB", "NUMSUB"]), vec![(3, 1)]),
            Send(3, c(&["PUBSUB", "NUMPAT"]), vec![(3, 1)]),
            Send(3, c(&["PUBSUB", "CHANNELS"]), vec![(3, 1)]),
            Send(3, c(&["PUBSUB", "CHANNELS", "n*"]), vec![(3, 1)]),
            Send(3, c(&["PUBSUB", "CHANNELS", "x*"]), vec![(3, 1)]),
            Send(0, c(&["PING"]), vec![(0, 1)]),
            Send(0, c(&["PING", "x"]), vec![(0, 1)]),
            Send(0, c(&["ECHO", "x"]), vec![(0, 1)]),
            Send(0, c(&["PUBLISH", "a", "b"]), vec![(0, 1)]),
            Send(0, c(&["CLIENT", "ID"]), vec![(0, 1)]),
            Send(0, c(&["FOO"]), vec![(0, 1)]),
            Send(0, c(&["SUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["RESET"]), vec![(0, 1)]),
            Send(
                3,
                c(&["PUBLISH", "news", "again"]),
                vec![(3, 1), (1, 1), (2, 2)],
            ),
            Send(0, c(&["ECHO", "free again"]), vec![(0, 1)]),
        ],
    );
}

#[test]
fn resp3_push_frames() {
    compare(
        "resp3",
        &[
            Hello(0, c(&["HELLO", "3"])),
            Send(0, c(&["SUBSCRIBE", "a"]), vec![(0, 1)]),
            Send(0, c(&["PING"]), vec![(0, 1)]),
            Send(0, c(&["ECHO", "hi"]), vec![(0, 1)]),
            Send(1, c(&["PUBLISH", "a", "m"]), vec![(1, 1), (0, 1)]),
            Send(0, c(&["PSUBSCRIBE", "*"]), vec![(0, 1)]),
            Send(1, c(&["PUBLISH", "a", "m2"]), vec![(1, 1), (0, 2)]),
            Send(0, c(&["PUBLISH", "a", "self"]), vec![(0, 3)]),
            Send(0, c(&["CLIENT", "GETNAME"]), vec![(0, 1)]),
            Send(0, c(&["CLIENT", "SETNAME", "x"]), vec![(0, 1)]),
            Send(0, c(&["CLIENT", "GETNAME"]), vec![(0, 1)]),
            Send(0, c(&["COMMAND", "INFO", "nope"]), vec![(0, 1)]),
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["PUNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["UNSUBSCRIBE"]), vec![(0, 1)]),
            Send(0, c(&["INFO", "nosuchsection"]), vec![(0, 1)]),
            Hello(0, c(&["HELLO", "2"])),
            Send(0, c(&["CLIENT", "GETNAME"]), vec![(0, 1)]),
            Send(0, c(&["INFO", "nosuchsection"]), vec![(0, 1)]),
            Send(0, c(&["COMMAND", "INFO", "nope"]), vec![(0, 1)]),
            Hello(0, c(&["HELLO"])),
            Hello(0, c(&["HELLO", "3", "SETNAME", "named"])),
            Send(0, c(&["CLIENT", "GETNAME"]), vec![(0, 1)]),
            Send(0, c(&["RESET"]), vec![(0, 1)]),
            Send(0, c(&["CLIENT", "GETNAME"]), vec![(0, 1)]),
        ],
    );
}

#[test]
fn errors_pipelines_and_inline() {
    let long_name = "x".repeat(200);
    let (a, b) = ("a".repeat(100), "b".repeat(100));
    let mut pipeline = inline("PING");
    pipeline.extend(c(&["ECHO", "a"]));
    pipeline.extend(inline("ping x"));
    pipeline.extend(b"*0\r\n*-1\r\n\r\n".iter());
    pipeline.extend(c(&["SELECT", "0"]));
    compare(
        "errors",
        &[
            Send(0, inline("foo bar baz"), vec![(0, 1)]),
            Send(0, b"*1\r\n$0\r\n\r\n".to_vec(), vec![(0, 1)]),
            Send(0, c(&[&long_name, &a, &b, "c"]), vec![(0, 1)]),
            Send(0, c(&["foo\r\nbar", "x\ny"]), vec![(0, 1)]),
            Send(0, c(&["echo"]), vec![(0, 1)]),
            Send(0, c(&["ping", "a", "b"]), vec![(0, 1)]),
            Send(0, c(&["publish", "a"]), vec![(0, 1)]),
            Send(0, c(&["select", "16"]), vec![(0, 1)]),
            Send(0, c(&["select", "x"]), vec![(0, 1)]),
            Send(0, c(&["select", "0"]), vec![(0, 1)]),
            Send(0, c(&["select", "2147483648"]), vec![(0, 1)]),
            Send(0, c(&["select", "-2147483649"]), vec![(0, 1)]),
            Send(
                0,
                b"*3\r\n$5\r\nhello\r\n$1\r\n3\r\n$1\r\n\xff\r\n".to_vec(),
                vec![(0, 1)],
            ),
            Send(
                0,
                b"*2\r\n$6\r\nclient\r\n$2\r\n\xfe\xff\r\n".to_vec(),
                vec![(0, 1)],
            ),
            Send(0, c(&["client", "setname", "a b"]), vec![(0, 1)]),
            Send(0, c(&["client", "setname", ""]), vec![(0, 1)]),
            Send(0, c(&["client", "getname"]), vec![(0, 1)]),
            Send(0, c(&["client", "setname", "ok-name"]), vec![(0, 1)]),
            Send(0, c(&["client", "getname"]), vec![(0, 1)]),
            Send(0, c(&["client", "getname", "x"]), vec![(0, 1)]),
            Send(0, c(&["client", "foo"]), vec![(0, 1)]),
            Send(0, c(&["client"]), vec![(0, 1)]),
            Send(0, c(&["pubsub", "foo"]), vec![(0, 1)]),
            Send(0, c(&["pubsub", "channels", "a", "b"]), vec![(0, 1)]),
            Send(0, c(&["pubsub", "numpat", "x"]), vec![(0, 1)]),
            Send(0, c(&["command", "foo"]), vec![(0, 1)]),
            Send(0, c(&["hello", "4"]), vec![(0, 1)]),
            Send(0, c(&["hello", "x"]), vec![(0, 1)]),
            Send(0, c(&["hello", "3", "foo"]), vec![(0, 1)]),
            Send(0, c(&["hello", "2", "auth", "bob", "pw"]), vec![(0, 1)]),
            Send(0, c(&["hello", "3", "setname", "a b"]), vec![(0, 1)]),
            Send(0, c(&["echo", "still resp2"]), vec![(0, 1)]),
            // AUTH as clients send it when a URL carries a user and password.
            Send(0, c(&["auth"]), vec![(0, 1)]),
            Send(0, c(&["auth", "pw"]), vec![(0, 1)]),
            Send(0, c(&["auth", "default", "pw"]), vec![(0, 1)]),
            Send(0, c(&["AUTH", "default", ""]), vec![(0, 1)]),
            Send(0, c(&["auth", "bob", "pw"]), vec![(0, 1)]),
            Send(0, c(&["auth", "Default", "pw"]), vec![(0, 1)]),
            Send(0, c(&["auth", "default", "pw", "x"]), vec![(0, 1)]),
            Send(1, c(&["subscribe", "s"]), vec![(1, 1)]),
            Send(1, c(&["auth", "default", "pw"]), vec![(1, 1)]),
            Send(0, c(&["command", "info", "auth"]), vec![(0, 1)]),
            Hello(0, c(&["hello", "2", "auth", "default", "pw"])),
            Send(0, pipeline, vec![(0, 4)]),
            Send(0, inline("echo \"a\\x41\\n\" 'it\\'s'"), vec![(0, 1)]),
            Send(0, inline("echo \"a\\x41\\n\""), vec![(0, 1)]),
            Send(0, inline("echo 'it\\'s'"), vec![(0, 1)]),
            Send(0, inline("  echo   spaced\t"), vec![(0, 1)]),
            Eof(0, c(&["QUIT", "extra", "args"])),
        ],
    );
}

#[test]
fn protocol_errors_close_the_connection() {
    let big_inline = vec![b'a'; 64 * 1024 + 1];
    let mut big_count = b"*".to_vec();
    big_count.extend(vec![b'1'; 64 * 1024]);
    let mut big_bulk = b"*1\r\n$".to_vec();
    big_bulk.extend(vec![b'1'; 64 * 1024]);
    let script: Vec<Step> = [
        b"*x\r\n".to_vec(),
        b"*1\r\n+x\r\n".to_vec(),
        b"*1\r\n\r\n".to_vec(),
        b"*1\r\n$-5\r\n".to_vec(),
        b"*1\r\n$600000000\r\n".to_vec(),
        b"*2147483648\r\n".to_vec(),
        b"echo \"abc\r\n".to_vec(),
        b"echo 'abc'x\r\n".to_vec(),
        b"PING\r\n*1\r\n$x\r\n".to_vec(),
        big_inline,
        big_count,
        big_bulk,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, bytes)| Eof(i, bytes))
    .collect();
    compare("protocol errors", &script);
}

#[test]
fn glob_patterns_match_as_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let kids = KidsServer::start(RouterConfig::default());
    let channels = [
        "a", "ab", "abc", "a.b", "a*b", "a?b", "a[b", "a]b", "a\\b", "-", "]", "^", "A", "aB",
        "hello", "hallo", "hxllo", "h", "b-a", "x", "\u{e9}",
    ];
    let patterns = [
        "*",
        "a*",
        "*b",
        "a?",
        "a?b",
        "a[bc]*",
        "a[^b]*",
        "[a-c]*",
        "[c-a]*",
        "h[ae]llo",
        "h[^e]llo",
        "a\\*b",
        "a[*]b",
        "a\\?b",
        "[\\]]",
        "[]]",
        "[^]]",
        "a[",
        "a[b",
        "\\",
        "a\\",
        "*\\b",
        "[a-]",
        "[-a]",
        "[^-]",
        "**a**",
        "?",
        "??",
        "[\u{e9}]*",
        "*[\u{80}-\u{ff}]*",
    ];
    let mut subs = Vec::new();
    for port in [redis.port, kids.port] {
        let mut s = super::support::Raw::connect(port);
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels);
        s.send(&cmd(&args));
        for _ in channels {
            s.frame();
        }
        subs.push(s);
    }
    let sorted = |f: Frame| -> Vec<Bytes> {
        let Frame::Array(items) = f else {
            panic!("{f:?}")
        };
        let mut v: Vec<Bytes> = items
            .into_iter()
            .map(|i| if let Frame::Bulk(b) = i { b } else { panic!() })
            .collect();
        v.sort();
        v
    };
    let (mut r, mut k) = (Raw::connect(redis.port), Raw::connect(kids.port));
    for p in patterns {
        r.send(&cmd(&["PUBSUB", "CHANNELS", p]));
        k.send(&cmd(&["PUBSUB", "CHANNELS", p]));
        assert_eq!(sorted(k.frame().1), sorted(r.frame().1), "pattern {p:?}");
    }
}
