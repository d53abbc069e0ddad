//! Real clients: greenstalk (Python) against the served engine.

use std::process::Command;

use miller_core::store::StoreConfig;

use super::served::Served;

const SCRIPT: &str = r#"
import sys, greenstalk
port = int(sys.argv[1])
c = greenstalk.Client(("127.0.0.1", port), use="jobs", watch="jobs")
a = c.put("hello")
b = c.put("world", priority=10)
assert c.stats_tube("jobs")["current-jobs-ready"] == 2
j = c.reserve(timeout=5)
assert (j.id, j.body) == (b, "world"), (j.id, j.body)
c.bury(j, priority=10)
assert c.stats_job(b)["state"] == "buried"
assert c.kick(10) == 1
j = c.reserve(timeout=5)
assert j.id == b
c.delete(j)
j = c.reserve(timeout=5)
assert (j.id, j.body) == (a, "hello")
c.release(j, delay=0)
j = c.reserve(timeout=5)
c.delete(j)
try:
    c.reserve(timeout=0)
    raise SystemExit("reserve of an empty tube returned")
except greenstalk.TimedOutError:
    pass
s = c.stats()
assert s["cmd-put"] == 2 and s["current-jobs-ready"] == 0, s
assert "jobs" in c.tubes()
print("greenstalk ok")
"#;

#[test]
fn greenstalk_puts_reserves_buries_kicks_and_deletes() {
    let Some(python) = test_support::python_with("greenstalk", "greenstalk") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), StoreConfig::default());
    let out = Command::new(&python)
        .args(["-c", SCRIPT, &served.port.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "greenstalk failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("greenstalk ok"));
}
