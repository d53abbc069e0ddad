//! The miller programs end to end, real processes against a real beanstalkd:
//! events published to sink and to kids reach the demo handler with their data
//! as published, each at least once, while a worker is killed with SIGKILL
//! mid-job and the master is killed mid-batch; the Python worker runs a job
//! the master put, releases another handler's and buries a stray bury copy
//! again; bad configs are refused with file and line.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use kids_core::Frame;
use miller_core::dispatch::Envelope;
use miller_core::{Client, PutParams, Queue};
use test_support::{Beanstalkd, Process, Stream, wait_for};

use super::sigterm_and_wait;
use super::sink::{Conn, start_sink};
use super::start_kids;

/// Writes a miller config for these ports into `dir`; returns its path.
fn write_config(
    dir: &Path,
    beanstalk: u16,
    sink: Option<u16>,
    kids: Option<u16>,
    output: &Path,
) -> std::path::PathBuf {
    let mut text = format!("beanstalk {{ host 127.0.0.1; port {beanstalk}; }}\n");
    if let Some(port) = sink {
        text += &format!(
            "source sink {{ port {port}; session miller-zhihu; filter activity.*; app zhihu; }}\n"
        );
    }
    if let Some(port) = kids {
        text += &format!("source kids {{ port {port}; psubscribe activity.*; app zhihu; }}\n");
    }
    text += "job { ttr 2s; }\nworker { tubes zhihu; concurrency 2; grace 5s; reserve_timeout 200ms; }\n";
    text += "retry { base 0; max_attempts 20; jitter 0; }\nset demo_delay_ms 300;\n";
    text += &format!("set demo_output '{}';\n", output.display());
    let path = dir.join("miller.conf");
    std::fs::write(&path, text).expect("write miller.conf");
    path
}

fn start(bin: &str, name: &str, args: &[&std::ffi::OsStr]) -> Process {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let p = Process::start(name, cmd).unwrap_or_else(|e| panic!("{e}"));
    p.wait_for_line(Stream::Stderr, |l| {
        l.starts_with(&format!("{name} running"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    p
}

fn master(conf: &Path) -> Process {
    start(
        env!("CARGO_BIN_EXE_miller-master"),
        "miller-master",
        &["-c".as_ref(), conf.as_os_str()],
    )
}

fn slave(conf: &Path) -> Process {
    start(
        env!("CARGO_BIN_EXE_miller-slave"),
        "miller-slave",
        &[
            "-c".as_ref(),
            conf.as_os_str(),
            "--tubes".as_ref(),
            "zhihu".as_ref(),
        ],
    )
}

/// Waits until the master has created its sink session (before that, a
/// publish reaches no session).
fn wait_for_session(sink: &mut Conn) {
    wait_for(
        "the master's sink session",
        || matches!(sink.call(&["SESSION", "LIST"]), Frame::Array(names) if names.contains(&Frame::bulk("miller-zhihu"))),
    );
}

fn lines(output: &Path) -> Vec<String> {
    std::fs::read_to_string(output)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The data of the events the handler finished.
fn done(output: &Path) -> BTreeSet<String> {
    lines(output)
        .iter()
        .filter_map(|l| l.strip_prefix("done member="))
        .filter_map(|l| l.split_once(' ').map(|(_, data)| data.to_owned()))
        .collect()
}

fn data(i: usize, from: &str) -> String {
    format!("{{\"MemberId\":{i},\"from\":\"{from}\",\"note\":\"a b\\\\c\"}}")
}

fn int(f: Frame) -> i64 {
    match f {
        Frame::Integer(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[test]
fn events_from_sink_and_kids_reach_the_handler_while_worker_and_master_are_killed() {
    let Some(beanstalkd) = Beanstalkd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, sink_port) = start_sink(&dir.path().join("sink-data"));
    let (kids, kids_addr) = start_kids(&[], 0);
    let kids_port: u16 = kids_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("kids port");
    let output = dir.path().join("handled.log");
    let conf = write_config(
        dir.path(),
        beanstalkd.port,
        Some(sink_port),
        Some(kids_port),
        &output,
    );

    let mut m = master(&conf);
    let mut s = slave(&conf);
    let mut sink_conn = Conn::connect(sink_port);
    let mut kids_conn = Conn::connect(kids_port);
    wait_for_session(&mut sink_conn);
    // The master's kids subscription is up once a probe reaches a subscriber
    // (the probe matches the pattern but no handler).
    wait_for("the master's kids subscription", || {
        int(kids_conn.call(&["PUBLISH", "activity.PROBE", "{}"])) == 1
    });

    let mut want = BTreeSet::new();
    let mut publish_sink = |range: std::ops::Range<usize>, want: &mut BTreeSet<String>| {
        for i in range {
            let d = data(i, "sink");
            assert!(int(sink_conn.call(&["PUBLISH", "activity.INVITE", &d])) > 0);
            want.insert(d);
        }
    };
    publish_sink(0..10, &mut want);
    for i in 100..110 {
        let d = data(i, "kids");
        assert_eq!(
            int(kids_conn.call(&["PUBLISH", "activity.INVITE", &d])),
            1,
            "the master listens"
        );
        want.insert(d);
    }

    // A worker killed in the middle of a job: the job comes back after its TTR.
    wait_for("a job started", || {
        lines(&output).iter().any(|l| l.starts_with("start "))
    });
    s.kill().expect("SIGKILL the worker");
    s = slave(&conf);

    // The master killed while a batch is in flight; what the sink session had
    // not acknowledged comes again to the restarted master.
    publish_sink(10..40, &mut want);
    m.kill().expect("SIGKILL the master");
    publish_sink(40..50, &mut want);
    m = master(&conf);
    publish_sink(50..60, &mut want);

    wait_for("every event handled", || {
        m.check_running().unwrap_or_else(|e| panic!("{e}"));
        s.check_running().unwrap_or_else(|e| panic!("{e}"));
        done(&output).is_superset(&want)
    });
    assert_eq!(
        done(&output),
        want,
        "nothing but what was published, data unchanged"
    );

    assert_eq!(
        sigterm_and_wait(&m).code(),
        Some(0),
        "the master exits 0 on SIGTERM"
    );
    assert_eq!(
        sigterm_and_wait(&s).code(),
        Some(0),
        "the worker exits 0 on SIGTERM"
    );
    drop((sink, kids, beanstalkd));
}

#[test]
fn the_python_worker_runs_a_job_the_master_put() {
    let Some(beanstalkd) = Beanstalkd::start() else {
        return;
    };
    let Some(python) = test_support::python_with("greenstalk", "greenstalk") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, sink_port) = start_sink(&dir.path().join("sink-data"));
    let conf = write_config(
        dir.path(),
        beanstalkd.port,
        Some(sink_port),
        None,
        &dir.path().join("unused"),
    );
    let m = master(&conf);
    let payload = "{\"MemberId\":7,\"text\":\"héllo\"}";
    let mut c = Conn::connect(sink_port);
    wait_for_session(&mut c);
    assert!(int(c.call(&["PUBLISH", "activity.INVITE", payload])) > 0);

    // Ahead of the master's job (priority 0): a job of another handler in
    // the app's tube (released for its worker, not buried) and a stray bury
    // copy of ours, never kicked (buried again, not run).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let envelope = |handler: &str, data: &str, last_error: Option<&str>| {
        let e = Envelope {
            event: "activity.INVITE".into(),
            app: "zhihu".into(),
            handler: handler.into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            attempt: 0,
            first_seen: 1,
            ttr: Some(60),
            last_error: last_error.map(String::from),
        };
        e.encode(1 << 16).expect("encode")
    };
    let first = PutParams {
        priority: 0,
        ..PutParams::default()
    };
    let (other, stray) = rt.block_on(async {
        let mut q = Client::connect(("127.0.0.1", beanstalkd.port))
            .await
            .expect("connect");
        q.use_tube("zhihu").await.expect("use");
        let other = q.put(envelope("another_handler", "o", None), first).await;
        let stray = q
            .put(
                envelope("send_invitation_mail", "stray", Some("down")),
                first,
            )
            .await;
        (other.expect("put"), stray.expect("put"))
    });

    let out = dir.path().join("py.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/miller_worker.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args([
            "--port",
            &beanstalkd.port.to_string(),
            "--tube",
            "zhihu",
            "--handler",
            "send_invitation_mail",
            "--once",
        ])
        .arg("--output")
        .arg(&out);
    let py = Process::start("miller_worker.py", cmd).unwrap_or_else(|e| panic!("{e}"));
    let status = py.wait().expect("the Python worker exits");
    assert!(status.success(), "{}", py.tail(20));
    assert_eq!(
        std::fs::read_to_string(&out).expect("its output"),
        format!("activity.INVITE {payload}\n"),
        "the stray copy did not run"
    );
    rt.block_on(async {
        let mut q = Client::connect(("127.0.0.1", beanstalkd.port))
            .await
            .expect("connect");
        let o = q.stats_job(other).await.expect("the other job is there");
        assert_eq!(
            o.number("buries"),
            Some(0),
            "another handler's job is not buried"
        );
        assert!(o.number("releases") >= Some(1), "it was released");
        let s = q.stats_job(stray).await.expect("the copy is there");
        assert_eq!(s.get("state"), Some("buried"));
    });
    assert_eq!(sigterm_and_wait(&m).code(), Some(0));
    drop((sink, beanstalkd));
}

#[test]
fn miller_programs_refuse_a_bad_config_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "beanstalk { port 11300; }\nworker { concurency 2; }\n",
    )
    .expect("write");
    for bin in [
        env!("CARGO_BIN_EXE_miller-master"),
        env!("CARGO_BIN_EXE_miller-slave"),
    ] {
        let out = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.conf:2:10: unknown key `concurency` in `worker` (did you mean `concurrency`?) (expected one of:"), "{err}");
    }
}
