//! wish-py: the Python package generated from calc.proto, against the Rust programs (and they against it).
//!
//! Each test generates the package with the `wish-py` program into a temp
//! dir and runs `examples/python/test_wish_py.py` (unittest) with python3,
//! or starts `examples/python/calc_server.py`. A missing python3, or a
//! python3 without the `protobuf` and `lz4` PyPI packages, skips the test
//! with one line, or fails it under REQUIRE_PEERS=1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use examples::calc::{ADVANCED_SERVICE, Calc, CalcRequest, CalcResponse, SimpleServer};
use prost::Message as _;
use test_support::{Process, Stream};
use tokio_util::codec::Decoder as _;
use wish_core::{
    BoxFuture, Bytes, CallContext, FrameCodec, Server, ServerConfig, Service, ServiceDesc, Status,
};

use super::{CALC_HOST, calc_client, sigterm_and_wait, start_calc_server, start_program};

/// python3, if it is there with protobuf and lz4 (see [`test_support::python_with`]).
fn python() -> Option<PathBuf> {
    test_support::python_with("google.protobuf, lz4.block", "protobuf lz4")
}

/// The package generated from calc.proto by the wish-py program, in a temp dir.
struct Package {
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl Package {
    fn generate() -> Option<Package> {
        let python = python()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let out = Command::new(env!("CARGO_BIN_EXE_wish-py"))
            .args(["--package", "calc_wish", "--out"])
            .arg(dir.path())
            .arg("-I")
            .arg(&proto)
            .arg(proto.join("calc.proto"))
            .output()
            .expect("run wish-py");
        assert!(out.status.success(), "wish-py: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "calc.Simple\ncalc.Advanced\n"
        );
        Some(Package { dir, python })
    }

    /// python3 with the package on its path.
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join(script),
        )
        .env("PYTHONPATH", self.dir.path())
        .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// Runs test classes of test_wish_py.py with `env`; its stdout. Panics
    /// with its output if a test fails.
    fn unittest(&self, classes: &[&str], env: &[(&str, String)]) -> String {
        let mut cmd = self.command("test_wish_py.py");
        cmd.args(classes);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run python3");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "{classes:?} failed:\n{stdout}\n{stderr}"
        );
        assert!(stderr.contains("\nOK"), "{stderr}");
        stdout
    }
}

#[test]
fn python_decodes_and_reencodes_the_golden_frames_and_serves_itself() {
    let Some(pkg) = Package::generate() else {
        return;
    };
    let protocol = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wish-core/PROTOCOL.md");
    let stdout = pkg.unittest(
        &["Golden", "PythonServer"],
        &[("WISH_PROTOCOL_MD", protocol.display().to_string())],
    );
    // Example (g) as the Python side compressed it again: another block,
    // which the Rust codec reads back to the same frame.
    let hex = stdout
        .lines()
        .find_map(|l| l.strip_prefix("GOLDEN-G-REENCODED "))
        .expect("the re-encoded (g)");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let frame = FrameCodec::new()
        .decode(&mut BytesMut::from(&bytes[..]))
        .expect("a frame")
        .expect("whole");
    let mut payload = vec![0x0a, 0xd8, 0x04];
    payload.extend(std::iter::repeat_n(b'x', 600));
    let mut want = wish_core::Frame::response(3, Bytes::from(payload));
    if let wish_core::Body::Response(r) = &mut want.body {
        r.compress = true;
    }
    assert_eq!(frame, want);
}

#[test]
fn python_clients_call_the_rust_calc_server() {
    let Some(pkg) = Package::generate() else {
        return;
    };
    let (server, port) = start_calc_server(&[]);
    pkg.unittest(
        &["RustCalcServer"],
        &[
            ("WISH_HOST", CALC_HOST.to_string()),
            ("WISH_CALC_PORT", port),
        ],
    );
    assert_eq!(sigterm_and_wait(&server).code(), Some(0));
}

/// calc.Advanced shaped for tests: Multiply's answers carry 600 bytes more
/// (a field CalcResponse does not declare), so that they are compressed;
/// Divide never answers.
struct Shaped;

impl Service for Shaped {
    fn descriptor(&self) -> &'static ServiceDesc {
        &ADVANCED_SERVICE
    }

    fn call(
        &self,
        method: usize,
        _ctx: CallContext,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        Box::pin(async move {
            if method != 0 {
                std::future::pending::<()>().await;
            }
            let r = CalcRequest::decode(request)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let mut out = CalcResponse {
                c: r.a.wrapping_mul(r.b),
            }
            .encode_to_vec();
            out.extend_from_slice(&[0x7a, 0xd8, 0x04]);
            out.extend(std::iter::repeat_n(b'x', 600));
            Ok(Bytes::from(out))
        })
    }
}

#[test]
fn python_clients_get_compressed_answers_and_cancel_on_a_rust_server() {
    let Some(pkg) = Package::generate() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::new(ServerConfig::default())
        .with_service(SimpleServer::new(Calc))
        .and_then(|s| s.with_service(Shaped))
        .expect("server");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(wish_core::net::serve(listener, server.clone(), async {
        let _ = stopped.await;
    }));
    pkg.unittest(
        &["RustShaped"],
        &[
            ("WISH_HOST", "127.0.0.1".to_string()),
            ("WISH_SHAPED_PORT", port.to_string()),
        ],
    );
    // Three calls of Divide were stopped: by the client's deadline (a
    // cancel frame) or the server's, by the server's deadline, and by a
    // cancelled asyncio task. Each cancel came before a later frame the
    // Python side saw answered, so they are all counted by now. The first
    // may count twice: when both deadlines pass together, the server counts
    // its own and then the cancel of the answer it had not yet written.
    let cancelled = server.stats().cancelled.load(Ordering::Relaxed);
    assert!((3..=4).contains(&cancelled), "{:?}", server.stats());
    let _ = stop.send(());
    runtime
        .block_on(serving)
        .expect("join")
        .expect("serve ends cleanly");
}

/// Starts examples/python/calc_server.py with `args` on a free port.
fn start_python_calc_server(pkg: &Package, args: &[&str]) -> (Process, String) {
    let mut cmd = pkg.command("calc_server.py");
    cmd.args(["--host", CALC_HOST, "--port", "0"]).args(args);
    let (process, addr) = start_program(cmd, "calc_server.py");
    let port = addr
        .strip_prefix(&format!("{CALC_HOST}:"))
        .unwrap_or_else(|| panic!("not on {CALC_HOST}: {addr}"))
        .to_string();
    (process, port)
}

/// SIGTERM, exit 0, and the counters it printed as it stopped.
fn stop_python_calc_server(process: &Process) -> String {
    assert_eq!(sigterm_and_wait(process).code(), Some(0), "exits 0");
    process
        .wait_for_line(Stream::Stderr, |l| l.contains("stopped:"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn counter(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map_or(0, |v| v.parse().expect("a number"))
}

#[test]
fn the_rust_calc_client_calls_the_python_calc_server() {
    let Some(pkg) = Package::generate() else {
        return;
    };
    let (server, port) = start_python_calc_server(&pkg, &["--pad", "600"]);
    let first = calc_client(&port, &["multiply", "3", "4"]);
    assert_eq!((first.0, first.1.as_str()), (Some(0), "12\n"), "{first:?}");
    assert!(first.2.contains("computed by the server"), "{first:?}");
    let second = calc_client(&port, &["multiply", "3", "4"]);
    assert_eq!(second.1, "12\n");
    assert!(second.2.contains("from the server's cache"), "{second:?}");
    let bypass = calc_client(&port, &["--no-cache", "multiply", "3", "4"]);
    assert!(bypass.2.contains("computed by the server"), "{bypass:?}");
    for (op, a, b, want) in [
        ("plus", "3", "4", "7\n"),
        ("minus", "3", "4", "-1\n"),
        ("divide", "7", "-2", "-3\n"),
        ("multiply", "-6", "7", "-42\n"),
    ] {
        let (code, out, err) = calc_client(&port, &[op, a, b]);
        assert_eq!((code, out.as_str()), (Some(0), want), "{op}: {err}");
    }
    let (code, _, err) = calc_client(&port, &["divide", "1", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid argument: division by zero"), "{err}");
    let (code, _, err) = calc_client(&port, &["plus", "2147483647", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("overflows int32"), "{err}");
    let stats = stop_python_calc_server(&server);
    assert_eq!(counter(&stats, "cache_hits"), 1, "{stats}");
    // Multiply's padded answers went out compressed, and calc-client read them.
    assert!(counter(&stats, "compressed_sent") >= 3, "{stats}");

    // A deadline: every call waits a minute; calc-client gives 200 ms.
    let (slow, port) = start_python_calc_server(&pkg, &["--delay-ms", "60000"]);
    let (code, _, err) = calc_client(&port, &["--deadline", "200", "plus", "1", "2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("deadline exceeded"), "{err}");
    // The server stopped the call, by its own deadline or at calc-client's
    // cancel frame, before it drained at SIGTERM.
    let stats = stop_python_calc_server(&slow);
    assert_eq!(counter(&stats, "cancelled"), 1, "{stats}");
}

#[test]
fn the_generated_package_builds_a_wheel() {
    let Some(pkg) = Package::generate() else {
        return;
    };
    // Offline, the build backend must be installed: setuptools with its
    // bdist_wheel (70.1 on), or an older one with the wheel package.
    // (setuptools first: importing pip before it breaks its distutils hook.)
    const BACKEND: &str = "import setuptools, importlib.util\n\
        assert importlib.util.find_spec('pip')\n\
        try:\n    from setuptools.command.bdist_wheel import bdist_wheel\n\
        except ImportError:\n    import wheel.bdist_wheel";
    let has_backend = Command::new(&pkg.python)
        .args(["-c", BACKEND])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_backend {
        if std::env::var(test_support::REQUIRE_PEERS).as_deref() == Ok("1") {
            panic!(
                "python3 cannot build wheels offline and REQUIRE_PEERS=1: pip install setuptools wheel"
            );
        }
        eprintln!("SKIPPED: python3 cannot build wheels offline (pip install setuptools wheel)");
        return;
    }
    let wheels = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&pkg.python)
        .args([
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
        ])
        .arg(wheels.path())
        .arg(pkg.dir.path())
        .output()
        .expect("pip wheel");
    assert!(out.status.success(), "pip wheel: {out:?}");
    let names: Vec<String> = std::fs::read_dir(wheels.path())
        .expect("wheels")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.len() == 1 && names[0].starts_with("calc_wish-0.1.0-py3-none-any"),
        "{names:?}"
    );
    // Installed from the wheel alone, it imports and works.
    let site = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&pkg.python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
        ])
        .arg(site.path())
        .arg(wheels.path().join(&names[0]))
        .output()
        .expect("pip install");
    assert!(out.status.success(), "pip install: {out:?}");
    let out = Command::new(&pkg.python)
        .args([
            "-c",
            "import calc_wish as c; print(c.CalcRequest(a=1, b=2).SerializeToString().hex(), \
             c.ADVANCED_SERVICE.methods[0].options.expire, c.wish_runtime.method_id('calc.Simple.Plus'))",
        ])
        .env("PYTHONPATH", site.path())
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "08011002 3600 4151525266\n",
        "{out:?}"
    );
}
