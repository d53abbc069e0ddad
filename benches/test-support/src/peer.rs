//! Finding the real programs that tests compare against, with the `REQUIRE_PEERS` rule.

use std::path::PathBuf;

/// The environment variable that turns a missing peer into a failure:
/// `REQUIRE_PEERS=1`, as `.ci/run` sets it after installing the peers.
pub const REQUIRE_PEERS: &str = "REQUIRE_PEERS";

/// The first file named `binary` in the directories of `PATH`.
pub fn on_path(binary: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// A peer binary a test needs (`redis-server`, `carbon-cache`, ...), found
/// on `PATH`. Without it the test is skipped: this prints one line saying
/// so (naming the Debian `package` that provides it) and returns `None`,
/// and the test returns.
///
/// # Panics
/// When the binary is missing and `REQUIRE_PEERS=1`: there, a missing peer
/// fails the test instead.
pub fn peer(binary: &str, package: &str) -> Option<PathBuf> {
    if let Some(path) = on_path(binary) {
        return Some(path);
    }
    if std::env::var(REQUIRE_PEERS).as_deref() == Ok("1") {
        panic!("{binary} not found and {REQUIRE_PEERS}=1: install the Debian package {package}");
    }
    eprintln!(
        "SKIPPED: {binary} not found (Debian package {package}); set {REQUIRE_PEERS}=1 to fail instead"
    );
    None
}

/// python3 when it can import `modules` (as `import` writes them:
/// `"google.protobuf, lz4.block"`); otherwise as [`peer`] does: one
/// "skipped" line and `None`, or a panic under `REQUIRE_PEERS=1`, naming
/// the PyPI packages `pip` to install.
pub fn python_with(modules: &str, pip: &str) -> Option<PathBuf> {
    let python = peer("python3", "python3")?;
    let imports = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if imports {
        return Some(python);
    }
    if std::env::var(REQUIRE_PEERS).as_deref() == Ok("1") {
        panic!(
            "python3 cannot import {modules} and {REQUIRE_PEERS}=1: python3 -m pip install {pip}"
        );
    }
    eprintln!("SKIPPED: python3 cannot import {modules} (python3 -m pip install {pip})");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_a_made_up_name() {
        assert!(on_path("sh").is_some_and(|p| p.ends_with("sh")));
        assert_eq!(on_path("no-such-program-anywhere"), None);
    }
}
