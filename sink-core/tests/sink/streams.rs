//! The stream engine against a real redis-server: the same scripted sessions
//! on both, replies compared, in RESP2 and RESP3.
//!
//! The engine is served by a small [`RespServer`] (kids-core's `dispatch`
//! does unknown commands, subcommands and arities). Its clock is set per
//! step from redis's own: an XADD step runs at the millisecond of the ID
//! redis returned, so both generate the same IDs, and every other step runs
//! at the wall clock. Replies are compared byte for byte, except that a
//! reply that differs is compared again as decoded frames with its time
//! values masked: integers of 10^12 and over (seen and delivery times), the
//! value after an `idle` key (XINFO CONSUMERS) and the idle time of an
//! XPENDING entry (`[id, consumer, idle, count]`). That is the whole
//! normalisation.
//!
//! Each script also runs through a whole sink: a connection of the broker
//! (dispatch with sink's merged command table, replies held until durable,
//! commits, blocked reads), on a clock set from redis's IDs and the
//! script's sleeps; its replies are compared with redis's the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kids_core::resp::{self, RespServer, RespState};
use kids_core::{Frame, NLimits, Outbox, Proto, Request};
use sink_core::stream::{
    Ctx, Outcome, STREAM_COMMANDS, StreamCommand, StreamOp, Streams, StreamsConfig,
};
use test_support::RedisServer;

use super::support::{Client as SinkClient, Node, WALL};

/// A decoded reply: enough of RESP2/RESP3 to compare replies and mask values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum V {
    /// `+`, `-`, `_`, `#`, `,`, `(` lines.
    Line(u8, Vec<u8>),
    Int(i64),
    /// `$` / `=` with their payload, `None` for `$-1`.
    Bulk(u8, Option<Vec<u8>>),
    /// `*`, `%` (2n items), `~`, `>`, `|`; `None` for `*-1`.
    Agg(u8, Option<Vec<V>>),
}

/// One reply from the front of `b` and the bytes it took, `None` if incomplete.
fn parse(b: &[u8]) -> Option<(V, usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let (tag, line) = (b[0], &b[1..end]);
    let next = end + 2;
    let num = || -> i64 {
        std::str::from_utf8(line)
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("a number")
    };
    match tag {
        b':' => Some((V::Int(num()), next)),
        b'$' | b'=' | b'!' => {
            let n = num();
            if n < 0 {
                return Some((V::Bulk(tag, None), next));
            }
            let n = n as usize;
            (b.len() >= next + n + 2)
                .then(|| (V::Bulk(tag, Some(b[next..next + n].to_vec())), next + n + 2))
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let n = num();
            if n < 0 {
                return Some((V::Agg(tag, None), next));
            }
            let n = if tag == b'%' || tag == b'|' { 2 * n } else { n };
            let mut at = next;
            let mut items = Vec::new();
            for _ in 0..n {
                let (v, used) = parse(&b[at..])?;
                items.push(v);
                at += used;
            }
            Some((V::Agg(tag, Some(items)), at))
        }
        _ => Some((V::Line(tag, line.to_vec()), next)),
    }
}

/// A client connection reading whole replies with their exact bytes.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    fn call(&mut self, args: &[Bytes]) -> Vec<u8> {
        let mut out = BytesMut::new();
        Frame::command(args.iter().map(|a| a.to_vec())).encode(Proto::Resp2, &mut out);
        self.stream.write_all(&out).expect("send");
        loop {
            if let Some((_, used)) = parse(&self.buf) {
                return self.buf.split_to(used).to_vec();
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read a reply");
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The engine behind kids-core's RESP dispatch, on a clock the test sets.
struct Engine {
    resp: RespState,
    streams: Streams,
    now_ms: u64,
    next_offset: u64,
    ops: Vec<StreamOp>,
}

impl Engine {
    fn new() -> Self {
        Self {
            resp: RespState::new(Arc::new(Outbox::new(1)), NLimits::default()),
            streams: Streams::new(StreamsConfig::default()),
            now_ms: 0,
            next_offset: 0,
            ops: Vec::new(),
        }
    }

    fn call(&mut self, args: &[Bytes]) -> Vec<u8> {
        let now = Instant::now();
        resp::dispatch(self, args.to_vec(), now);
        resp::flush(self, now);
        let mut buf = BytesMut::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let std::task::Poll::Ready(Ok(n)) =
            self.resp.outbox().poll_drain(&mut cx, &mut buf, usize::MAX)
        {
            self.resp.outbox().consumed(n, &NLimits::default());
        }
        buf.to_vec()
    }
}

impl RespServer for Engine {
    type Command = StreamCommand;
    fn commands(&self) -> &'static [kids_core::resp::Command<StreamCommand>] {
        STREAM_COMMANDS
    }
    fn resp(&mut self) -> &mut RespState {
        &mut self.resp
    }
    fn resp_ref(&self) -> &RespState {
        &self.resp
    }
    fn run(&mut self, command: StreamCommand, args: Request, _: Instant) {
        let mut cx = Ctx {
            now_ms: self.now_ms,
            next_offset: self.next_offset,
            ops: &mut self.ops,
        };
        let mut w = self.resp.writer();
        if let Outcome::Block { .. } = self.streams.run(command, &args, &mut cx, &mut w) {
            // These sessions never wait: a block is answered as its timeout.
            Streams::timeout_reply(&mut w);
        }
        self.next_offset = cx.next_offset;
    }
    fn server_name(&self) -> &'static str {
        "sink"
    }
}

/// The same commands through a whole sink, on a clock the script moves.
struct Sink {
    node: Node,
    client: SinkClient,
    at_ms: u64,
}

impl Sink {
    fn new() -> Self {
        let node = Node::new(sink_core::BrokerConfig::default());
        let client = node.client();
        Self {
            node,
            client,
            at_ms: WALL,
        }
    }

    /// Moves the clock forward to `ms` (never back).
    fn set_ms(&mut self, ms: u64) {
        if ms > self.at_ms {
            self.node.advance(Duration::from_millis(ms - self.at_ms));
            self.at_ms = ms;
        }
    }

    fn call(&mut self, args: &[Bytes]) -> Vec<u8> {
        let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        self.client.send(&refs);
        self.client.poll(self.node.now);
        self.node.commit();
        self.client.poll(self.node.now);
        let mut out = self.client.io.take_output();
        if out.is_empty() {
            // A blocked read: its timeout passes.
            let block = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"BLOCK"))
                .and_then(|i| args.get(i + 1))
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
                .unwrap_or(0);
            self.set_ms(self.at_ms + block.max(1));
            self.client.poll(self.node.now);
            out = self.client.io.take_output();
        }
        out
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

const MASK: i64 = -424242;

fn is_id(v: &V) -> bool {
    matches!(v, V::Bulk(_, Some(b)) if b.iter().filter(|&&c| c == b'-').count() == 1 && b.iter().all(|c| c.is_ascii_digit() || *c == b'-'))
}

fn is_idle_key(v: &V) -> bool {
    matches!(v, V::Bulk(_, Some(b)) if &b[..] == b"idle")
}

/// Masks time values: see the module documentation.
fn mask(v: &mut V) {
    match v {
        V::Int(n) if *n >= 1_000_000_000_000 => *n = MASK,
        V::Agg(_, Some(items)) => {
            if items.len() == 4
                && is_id(&items[0])
                && matches!(items[1], V::Bulk(_, Some(_)))
                && matches!(items[2], V::Int(_))
                && matches!(items[3], V::Int(_))
            {
                items[2] = V::Int(MASK);
            }
            for i in 0..items.len() {
                if i > 0 && is_idle_key(&items[i - 1]) {
                    items[i] = V::Int(MASK);
                }
                mask(&mut items[i]);
            }
        }
        _ => {}
    }
}

fn decode(bytes: &[u8]) -> V {
    match parse(bytes) {
        Some((v, n)) if n == bytes.len() => v,
        _ => panic!("not one whole reply: {:?}", String::from_utf8_lossy(bytes)),
    }
}

/// Replaces `{n}` by the n-th ID redis's XADDs returned (1-based) and `{msn}` by its milliseconds.
fn substitute(arg: &str, ids: &[String]) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("closing brace") + open;
        out.push_str(&rest[..open]);
        let name = &rest[open + 1..close];
        let (ms, n) = match name.strip_prefix("ms") {
            Some(n) => (true, n),
            None => (false, name),
        };
        let id = &ids[n.parse::<usize>().expect("index") - 1];
        out.push_str(if ms {
            id.split('-').next().unwrap_or_default()
        } else {
            id
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs `script` (one command a line, arguments split on spaces; `sleep N`
/// pauses N ms) on a fresh engine and on redis after FLUSHALL, in `proto`.
fn session(redis: &RedisServer, proto: Proto, script: &str) {
    let mut r = Client::connect(redis.port);
    let mut e = Engine::new();
    let mut sink = Sink::new();
    r.call(&[Bytes::from_static(b"FLUSHALL")]);
    if proto == Proto::Resp3 {
        let hello = [Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")];
        r.call(&hello);
        e.call(&hello);
        sink.call(&hello);
    }
    let mut ids: Vec<String> = Vec::new();
    let explicit = b"-ERR sink assigns stream IDs: use * as the ID\r\n";
    for line in script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(ms) = line.strip_prefix("sleep ") {
            let ms: u64 = ms.parse().expect("ms");
            std::thread::sleep(Duration::from_millis(ms));
            sink.set_ms(sink.at_ms + ms);
            continue;
        }
        // `ours-only` lines hold our own refusal of explicit XADD IDs: redis takes them.
        let (line, ours_only) = match line.strip_prefix("ours-only ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|a| {
                Bytes::from(
                    substitute(a, &ids)
                        .replace("\\s", " ")
                        .replace("<empty>", ""),
                )
            })
            .collect();
        let theirs = r.call(&args);
        e.now_ms = wall_ms();
        if args[0].eq_ignore_ascii_case(b"XADD")
            && let V::Bulk(_, Some(id)) = decode(&theirs)
        {
            let id = String::from_utf8_lossy(&id).into_owned();
            e.now_ms = id
                .split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .expect("id ms");
            sink.set_ms(e.now_ms);
            ids.push(id);
        }
        let ours = e.call(&args);
        let through_sink = sink.call(&args);
        assert!(
            !through_sink.is_empty(),
            "sink answered nothing to `{line}`"
        );
        if ours_only {
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(explicit),
                "`{line}`"
            );
            assert_eq!(through_sink, ours, "sink: `{line}`");
            continue;
        }
        if through_sink != theirs {
            let (mut a, mut b) = (decode(&through_sink), decode(&theirs));
            mask(&mut a);
            mask(&mut b);
            assert_eq!(
                a,
                b,
                "sink {proto:?} `{line}`\n sink:   {:?}\n theirs: {:?}",
                String::from_utf8_lossy(&through_sink),
                String::from_utf8_lossy(&theirs)
            );
        }
        if ours != theirs {
            let redis_took_it = args[0].eq_ignore_ascii_case(b"XADD") && ours == explicit;
            assert!(
                !redis_took_it,
                "`{line}`: an explicit ID not marked ours-only"
            );
            let (mut a, mut b) = (decode(&ours), decode(&theirs));
            mask(&mut a);
            mask(&mut b);
            assert_eq!(
                a,
                b,
                "{proto:?} `{line}`\n ours:   {:?}\n theirs: {:?}",
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }
    // Replaying the ops the session produced gives the same state.
    let mut replayed = Streams::new(StreamsConfig::default());
    for op in &e.ops {
        let mut buf = Vec::new();
        op.encode(&mut buf);
        replayed
            .apply(&StreamOp::decode(&buf).expect("decode"))
            .expect("apply");
    }
    let mut again = Engine::new();
    again.streams = replayed;
    if proto == Proto::Resp3 {
        again.call(&[Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")]);
    }
    for key in ["s", "t", "e", "big"] {
        for args in [
            vec!["XINFO", "STREAM", key, "FULL", "COUNT", "0"],
            vec!["XINFO", "GROUPS", key],
            vec!["XRANGE", key, "-", "+"],
        ] {
            let args: Vec<Bytes> = args
                .into_iter()
                .map(|a| Bytes::from(a.to_string()))
                .collect();
            again.now_ms = e.now_ms;
            assert_eq!(
                String::from_utf8_lossy(&e.call(&args)),
                String::from_utf8_lossy(&again.call(&args)),
                "replay: {args:?}"
            );
        }
    }
}

fn both(script: &str) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    session(&redis, Proto::Resp2, script);
    session(&redis, Proto::Resp3, script);
}

#[test]
fn entries_ranges_and_reads() {
    both(
        "
        XLEN s
        XRANGE s - +
        XADD s NOMKSTREAM * a 1
        XADD s * a 1
        sleep 2
        XADD s * b 2 c 3
        sleep 2
        XADD s * d 4
        sleep 2
        XADD s * e 5
        ours-only XADD s 1-1 a 1
        ours-only XADD s 0-0 a 1
        ours-only XADD s 5-* a 1
        XADD s abc a 1
        XADD s * a
        XADD s *
        XADD s NOMKSTREAM * f 6
        XLEN s
        XRANGE s - +
        XRANGE s - + COUNT 2
        XRANGE s - + COUNT 0
        XRANGE s - + COUNT -1
        XRANGE s - + COUNT x
        XRANGE s - + FOO 1
        XRANGE s - + COUNT
        XRANGE s ({1} +
        XRANGE s ({1} ({4}
        XRANGE s {ms2} {ms2}
        XRANGE s {ms2} +
        XRANGE s - {ms3}
        XRANGE s + -
        XRANGE s (- +
        XRANGE s x +
        XRANGE s (18446744073709551615-18446744073709551615 +
        XRANGE s - (0-0
        XRANGE s 0 18446744073709551615
        XREVRANGE s + -
        XREVRANGE s + - COUNT 2
        XREVRANGE s ({5} -
        XREVRANGE s {ms4} {ms2}
        XRANGE nokey - +
        XREVRANGE nokey + -
        XREAD STREAMS s 0
        XREAD COUNT 2 STREAMS s 0-0
        XREAD COUNT 2 STREAMS s nokey {2} 0
        XREAD STREAMS s $
        XREAD BLOCK 100 STREAMS s {3}
        XREAD BLOCK 100 STREAMS s nokey 0 0
        XREAD STREAMS s
        XREAD STREAMS s nokey 0
        XREAD COUNT x STREAMS s 0
        XREAD BLOCK -1 STREAMS s 0
        XREAD BLOCK x STREAMS s 0
        XREAD FOO STREAMS s 0
        XREAD GROUP g c STREAMS s 0
        XREAD NOACK STREAMS s 0
        XREAD STREAMS s >
        XREAD STREAMS s bad
        XREAD COUNT 1
        XLEN nokey
        XLEN s extra
        XFOO s
        ",
    );
}

#[test]
fn deletes_and_trims() {
    both(
        "
        XADD s * a 1
        XADD s * a 2
        XADD s * a 3
        XADD s * a 4
        XADD s * a 5
        XADD s * a 6
        XDEL s {2} {2} 9999-0
        XDEL s bad
        XDEL nokey bad
        XINFO STREAM s
        XDEL s {1}
        XINFO STREAM s
        XTRIM s MAXLEN 3
        XINFO STREAM s
        XTRIM s MAXLEN = 10
        XTRIM s MINID {5}
        XINFO STREAM s
        XTRIM s MAXLEN ~ 1
        XTRIM s MAXLEN -1
        XTRIM s MAXLEN x
        XTRIM s MINID bad
        XTRIM s FOO 1
        XTRIM s LIMIT 10 MAXLEN 1
        XTRIM s MAXLEN 1 LIMIT 10
        XTRIM s MAXLEN ~ 1 LIMIT -1
        XTRIM s MAXLEN 1 MINID 0
        XTRIM s MAXLEN
        XTRIM nokey MAXLEN 1
        XADD s MAXLEN 2 * a 7
        XADD s MINID {7} * a 8
        XADD s MAXLEN ~ 0 * a 9
        XADD s LIMIT 5 * a 10
        XADD s MAXLEN 1 LIMIT 5 * a 10
        XADD s MAXLEN = 1 * a 11
        XRANGE s - +
        XINFO STREAM s
        XDEL s {9} {10}
        XINFO STREAM s
        XLEN s
        XADD s * a 12
        XINFO STREAM s FULL
        ",
    );
}

/// Enough entries for several 100-entry nodes: `~` trims whole nodes only.
#[test]
fn approximate_trimming_follows_nodes() {
    let mut script = String::new();
    for i in 0..250 {
        script.push_str(&format!("XADD big * n {i}\n"));
    }
    script.push_str(
        "
        XINFO STREAM big
        XTRIM big MAXLEN ~ 220
        XTRIM big MAXLEN ~ 140
        XLEN big
        XTRIM big MAXLEN ~ 10 LIMIT 50
        XTRIM big MAXLEN ~ 10 LIMIT 100
        XINFO STREAM big
        XTRIM big MINID ~ {230}
        XTRIM big MINID ~ {240}
        XLEN big
        XTRIM big MAXLEN 45
        XINFO STREAM big
        XDEL big {210} {211}
        XTRIM big MINID ~ {230}
        XADD big MAXLEN ~ 5 * n last
        XINFO STREAM big
        XRANGE big - + COUNT 3
        ",
    );
    both(&script);
}

#[test]
fn groups_and_deliveries() {
    both(
        "
        XGROUP CREATE s g $
        XGROUP CREATE s g $ MKSTREAM
        XINFO STREAM s
        XINFO GROUPS s
        XGROUP CREATE s g $ MKSTREAM
        XGROUP CREATE s g2 0 ENTRIESREAD 0
        XGROUP CREATE s g3 0 ENTRIESREAD -2
        XGROUP CREATE s g3 0 ENTRIESREAD x
        XGROUP CREATE s g3 0 FOO
        XGROUP CREATE s g3 bad
        XGROUP CREATE s g3 0 MKSTREAM ENTRIESREAD 1 MKSTREAM
        XGROUP CREATE s g3
        XADD s * a 1
        XADD s * a 2
        XADD s * a 3
        XADD s * a 4
        XINFO GROUPS s
        XREADGROUP GROUP g c1 COUNT 1 STREAMS s >
        XREADGROUP GROUP g c1 STREAMS s >
        XREADGROUP GROUP g c1 STREAMS s >
        XREADGROUP GROUP g c2 BLOCK 10 STREAMS s >
        XREADGROUP GROUP g c1 STREAMS s 0
        XREADGROUP GROUP g c1 COUNT 2 STREAMS s {1}
        XREADGROUP GROUP g c9 STREAMS s 0
        XREADGROUP GROUP g2 c1 NOACK STREAMS s >
        XREADGROUP GROUP nog c1 STREAMS s >
        XREADGROUP GROUP g c1 STREAMS nokey >
        XREADGROUP GROUP g c1 STREAMS s $
        XREADGROUP GROUP g c1 STREAMS s
        XREADGROUP STREAMS s >
        XREADGROUP GROUP g c1 STREAMS s bad
        XINFO GROUPS s
        XINFO CONSUMERS s g
        XINFO CONSUMERS s nog
        XINFO CONSUMERS nokey g
        XPENDING s g
        XPENDING s g - + 10
        XPENDING s g - + 10 c1
        XPENDING s g - + 10 nobody
        XPENDING s g ({1} + 1
        XPENDING s g IDLE 100000 - + 10
        XPENDING s g IDLE 0 - + 10
        XPENDING s g2
        XPENDING s nog
        XPENDING s g - +
        XPENDING s g - + x
        XPENDING s g IDLE x - + 10
        XPENDING s g IDLE 10 - +
        XPENDING s g bad + 10
        XACK s g {1} {1} 9999-0
        XACK s g bad
        XACK s nog bad
        XACK nokey g {1}
        XPENDING s g
        XDEL s {2}
        XREADGROUP GROUP g c1 STREAMS s 0
        XINFO STREAM s FULL
        XINFO STREAM s FULL COUNT 1
        XINFO STREAM s FULL COUNT
        XINFO STREAM s FOO
        XINFO STREAM nokey
        XINFO GROUPS s
        XGROUP SETID s g 0
        XGROUP SETID s g $ ENTRIESREAD 2
        XGROUP SETID s g - ENTRIESREAD 2 FOO
        XGROUP SETID s g bad
        XGROUP SETID s nog 0
        XINFO GROUPS s
        XGROUP CREATECONSUMER s g c3
        XGROUP CREATECONSUMER s g c3
        XGROUP CREATECONSUMER s nog c3
        XGROUP DELCONSUMER s g c1
        XGROUP DELCONSUMER s g nobody
        XGROUP DESTROY s g2
        XGROUP DESTROY s g2
        XGROUP DESTROY nokey g2
        XGROUP FOO s g
        XGROUP HELP
        XGROUP HELP extra
        XGROUP CREATE
        XINFO HELP
        XINFO FOO s
        XINFO
        XINFO GROUPS s
        XINFO CONSUMERS s g
        ",
    );
}

#[test]
fn claims() {
    both(
        "
        XGROUP CREATE s g 0 MKSTREAM
        XADD s * a 1
        XADD s * a 2
        XADD s * a 3
        XADD s * a 4
        XADD s * a 5
        XREADGROUP GROUP g c1 STREAMS s >
        XCLAIM s g c2 100000 {1}
        sleep 30
        XCLAIM s g c2 10 {1} {2}
        XPENDING s g - + 10
        XCLAIM s g c2 0 {3} JUSTID
        XCLAIM s g c3 0 {3} RETRYCOUNT 7 IDLE 5
        XCLAIM s g c3 0 {4} TIME 12
        XCLAIM s g c3 0 {4} {4}
        XPENDING s g - + 10
        XACK s g {5}
        XCLAIM s g c3 0 {5}
        XCLAIM s g c3 0 {5} FORCE
        XCLAIM s g c3 0 {5} FORCE
        XCLAIM s g c4 0 {5} FORCE JUSTID LASTID {5}
        XINFO GROUPS s
        XCLAIM s g c3 0 {5} LASTID bad
        XCLAIM s g c3 0 {5} IDLE x
        XCLAIM s g c3 0 {5} TIME x
        XCLAIM s g c3 0 {5} RETRYCOUNT x
        XCLAIM s g c3 0 {5} BOGUS
        XCLAIM s g c3 0 {5} IDLE
        XCLAIM s g c3 x {5}
        XCLAIM s nog c3 0 {5}
        XCLAIM nokey g c3 0 {5}
        XDEL s {4}
        XCLAIM s g c3 0 {4} {3}
        XPENDING s g
        XPENDING s g - + 10
        XINFO CONSUMERS s g
        XAUTOCLAIM s g c5 0 0 COUNT 1
        XAUTOCLAIM s g c5 0 0 COUNT 2 JUSTID
        XAUTOCLAIM s g c5 100000 0
        XAUTOCLAIM s g c5 0 ({1}
        XAUTOCLAIM s g c5 0 0
        XADD s * a 6
        XREADGROUP GROUP g c1 STREAMS s >
        XDEL s {6}
        XAUTOCLAIM s g c6 0 -
        XAUTOCLAIM s g c6 0 - COUNT 0
        XAUTOCLAIM s g c6 0 - COUNT x
        XAUTOCLAIM s g c6 x -
        XAUTOCLAIM s g c6 0 bad
        XAUTOCLAIM s g c6 0 - FOO
        XAUTOCLAIM s nog c6 0 -
        XPENDING s g
        XINFO STREAM s FULL
        ",
    );
}

#[test]
fn edge_cases() {
    both(
        "
        XGROUP CREATE s g 0 MKSTREAM ENTRIESREAD 0
        XGROUP CREATE t g 0 MKSTREAM
        XADD s * a 1
        XADD s * a 2
        XADD s * a 3
        XADD t * b 1
        XREADGROUP GROUP g c1 COUNT 2 STREAMS s t > >
        XREADGROUP GROUP g c1 STREAMS s t > >
        XREADGROUP GROUP g c1 STREAMS s t > >
        XREADGROUP GROUP g fresh STREAMS s 0
        XINFO CONSUMERS s g
        XDEL s {1}
        XINFO GROUPS s
        XREADGROUP GROUP g c1 COUNT 1 STREAMS s 0
        XREADGROUP GROUP g c1 STREAMS s ({1}
        XINFO STREAM s FULL
        XPENDING s g IDLE 0 - + 10 c1
        XPENDING s g - + 0
        XPENDING s g - + -5
        XPENDING s g + - 10
        XPENDING s g (18446744073709551615-18446744073709551615 + 10
        XACK s g {1} {2} {3}
        XINFO GROUPS s
        XGROUP SETID s g 0 ENTRIESREAD 0
        XINFO GROUPS s
        XADD s MAXLEN ~ 1 LIMIT 0 * a 4
        XADD s MINID ~ {4} LIMIT 1 * a 5
        XTRIM s MINID (5
        XTRIM s MINID ~ 0
        XRANGE s (0 +
        XREAD COUNT 1 STREAMS s t 0 0
        XREAD STREAMS s t $ $
        XINFO STREAM t FULL COUNT -3
        XINFO STREAM t full count 0
        XINFO STREAM t FULL COUNT 1 extra
        xadd t * 𝄞 ü
        xrange t - + count 1
        XGROUP CREATE t g2 $ ENTRIESREAD 1
        XINFO GROUPS t
        XGROUP DESTROY t g
        XINFO STREAM t
        ",
    );
}

/// Nodes also close at 4096 bytes of Redis's listpack encoding: sizes of
/// values, numbers stored as integers, fields other than the first entry's.
#[test]
fn nodes_close_at_their_byte_size() {
    let mut script = String::new();
    let sixty = "x".repeat(60);
    for i in 0..100 {
        script.push_str(&format!("XADD big * payload {sixty}{i}\n"));
    }
    script.push_str("XINFO STREAM big\n");
    for i in 0..60 {
        script.push_str(&format!("XADD s * n {} m {}\n", i * 1000, -i));
        script.push_str(&format!("XADD s * other {sixty} n {i}\n"));
    }
    let huge = "y".repeat(5000);
    script.push_str(&format!(
        "XINFO STREAM s\nXADD s * h {huge}\nXADD s * h 1\nXINFO STREAM s\nXTRIM s MAXLEN ~ 50\nXINFO STREAM s\nXTRIM big MAXLEN ~ 50\nXINFO STREAM big\n"
    ));
    both(&script);
}
