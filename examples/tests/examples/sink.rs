//! The sink example: serves, exits 0 on SIGTERM, and receives unchanged
//! what a kids agent forwards to it (`store network` sends `LOG`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use kids_core::{Frame, FrameCodec, Proto};
use test_support::{Process, Stream};
use tokio_util::codec::Decoder;

use super::{sigterm_and_wait, start_kids};

/// Starts the sink example on a free port with its log in `data`.
pub(crate) fn start_sink(data: &Path) -> (Process, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sink"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--fsync", "always"])
        .arg("--data-dir")
        .arg(data);
    let process = Process::start("sink", cmd).unwrap_or_else(|e| panic!("{e}"));
    // Its log lines (recovery) come first on stderr.
    let line = process
        .wait_for_line(Stream::Stderr, |l| l.starts_with("sink listening on "))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (process, port)
}

/// A blocking RESP2 connection: commands out, frames in.
pub(crate) struct Conn {
    stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Conn {
    pub(crate) fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Conn {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, commands: &[Vec<&str>]) {
        let mut out = BytesMut::new();
        for c in commands {
            Frame::command(c).encode(Proto::Resp2, &mut out);
        }
        self.stream.write_all(&out).expect("send");
    }

    fn next(&mut self) -> Frame {
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf).expect("valid RESP") {
                return f;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    pub(crate) fn call(&mut self, args: &[&str]) -> Frame {
        self.send(&[args.to_vec()]);
        self.next()
    }
}

fn ok() -> Frame {
    Frame::Simple(bytes::Bytes::from_static(b"OK"))
}

#[test]
fn a_kids_agent_forwards_into_sink_unchanged() {
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, sink_port) = start_sink(&dir.path().join("data"));
    let mut s = Conn::connect(sink_port);
    assert_eq!(s.call(&["SESSION", "CREATE", "fwd", "fw.*"]), ok());

    // The seed-shaped agent config of examples/conf/agent-to-sink.conf, with
    // this test's port and spool directory.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/agent-to-sink.conf"),
    )
    .expect("examples/conf/agent-to-sink.conf");
    let text = shipped
        .replace("port 3390;", &format!("port {sink_port};"))
        .replace("port 3388;", "port 0;")
        .replace(
            "path kidsbuf;",
            &format!("path {};", dir.path().join("kidsbuf").display()),
        );
    assert!(text.contains(&format!("port {sink_port};")), "{text}");
    let conf = dir.path().join("agent.conf");
    std::fs::write(&conf, text).expect("write agent.conf");
    let (agent, agent_addr) = start_kids(&["-c".as_ref(), conf.as_os_str()], 0);
    let agent_port: u16 = agent_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the agent's port");

    // Payloads with spaces, CRLF and binary-looking bytes go through as they are.
    let messages: Vec<(String, String)> = (0..N)
        .map(|i| {
            let topic = if i % 3 == 0 { "fw.b" } else { "fw.a" };
            (topic.to_owned(), format!("msg {i}\r\nline two \u{e9}"))
        })
        .collect();
    let mut a = Conn::connect(agent_port);
    let commands: Vec<Vec<&str>> = messages
        .iter()
        .map(|(t, p)| vec!["PUBLISH", t.as_str(), p.as_str()])
        .collect();
    a.send(&commands);
    for _ in 0..N {
        assert!(matches!(a.next(), Frame::Integer(_)), "the agent accepts");
    }

    // In sink: every message, in order, on a session over fw.*.
    let mut c = Conn::connect(sink_port);
    assert_eq!(c.call(&["SESSION", "LOAD", "fwd"]), ok());
    let mut last = 0;
    for (i, (topic, payload)) in messages.iter().enumerate() {
        let f = c.next();
        let Frame::Array(v) = &f else {
            panic!("push {i}: {f:?}");
        };
        let Frame::Integer(offset) = v[2] else {
            panic!("push {i}: {f:?}");
        };
        assert!(offset > last, "offsets increase");
        last = offset;
        assert_eq!(
            (&v[0], &v[1], &v[3], &v[4]),
            (
                &Frame::bulk("session"),
                &Frame::bulk("fwd"),
                &Frame::bulk(topic),
                &Frame::bulk(payload)
            ),
            "message {i}"
        );
    }
    eprintln!("sink after forwarding: {N} messages checked, last offset {last}");

    assert_eq!(sigterm_and_wait(&agent).code(), Some(0), "kids exits 0");
    assert_eq!(
        sigterm_and_wait(&sink).code(),
        Some(0),
        "sink exits 0 on SIGTERM"
    );
}
