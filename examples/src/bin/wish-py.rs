//! wish-py: generates an installable Python package (messages, method tables, blocking and asyncio clients, asyncio server bases) from .proto files.
//!
//! Run it: `cargo run -p examples --bin wish-py -- --package calc_wish --out
//! target/calc-py -I examples/proto examples/proto/calc.proto`, then
//! `pip install target/calc-py` (or put `target/calc-py` on `PYTHONPATH`)
//! and `import calc_wish`. The package needs `protobuf` and `lz4` from PyPI,
//! not `protoc`. Prints the services it generated, one per line.
//!
//! Options: `--package NAME` (the import name; default `wish_generated`),
//! `--out DIR` (default `.`), `--version V` (default 0.1.0), `-I DIR` (an
//! include directory, repeatable; default: each file's own directory).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wish_core::build::PythonPackage;

const USAGE: &str =
    "usage: wish-py [--package NAME] [--out DIR] [--version V] [-I DIR]... FILE.proto...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wish-py: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let (mut package, mut out, mut version) =
        ("wish_generated".to_string(), PathBuf::from("."), None);
    let (mut includes, mut protos) = (Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--package" => package = value()?,
            "--out" => out = PathBuf::from(value()?),
            "--version" => version = Some(value()?),
            "-I" => includes.push(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}; {USAGE}")),
            _ => protos.push(PathBuf::from(arg)),
        }
    }
    if protos.is_empty() {
        return Err(USAGE.to_string());
    }
    if includes.is_empty() {
        for p in &protos {
            let dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
            if !includes.contains(&dir) {
                includes.push(dir);
            }
        }
    }
    let mut generator = PythonPackage::new(package);
    if let Some(v) = version {
        generator = generator.version(v);
    }
    let services = generator
        .generate(&protos, &includes, &out)
        .map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    for s in services {
        writeln!(stdout, "{}", s.full_name).map_err(|e| e.to_string())?;
    }
    Ok(())
}
