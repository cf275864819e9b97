//! Project tasks, so a fresh machine with only the Rust toolchain needs one command each:
//! `cargo xtask test` (the whole suite, as CI runs it), `cargo xtask devnet`, `cargo xtask ci`.
//!
//! Each task first makes sure the system prerequisites are there (RocksDB's bindings need
//! libclang), installing them with apt-get when running as root, or stopping with the exact
//! command to run.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    match task {
        "test" => test(rest),
        "ci" => ci(rest),
        "devnet" => devnet(rest),
        "bench" => bench(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 test     run the whole test suite (what CI runs)\n\
                 ci       fmt check, clippy -D warnings, then the test suite\n\
                 devnet   run a whole federation on this machine\n\
                 bench    run the criterion benchmarks in release (not part of CI)"
            );
            if task == "help" { Ok(()) } else { bail!("unknown task {task}") }
        }
    }
}

fn root() -> PathBuf {
    // At run time, not compile time: a build reused from another checkout (CI shares the
    // target directory) must still act on this checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Result<()> {
    let shown = format!("{c:?}");
    eprintln!("xtask: {shown}");
    let status = c.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Debian packages the build needs, with a file that proves each is installed.
const SYSTEM_PACKAGES: &[(&str, &[&str])] = &[(
    "libclang-dev",
    &[
        "/usr/lib/llvm-14/lib/libclang.so",
        "/usr/lib/llvm-15/lib/libclang.so",
        "/usr/lib/llvm-16/lib/libclang.so",
        "/usr/lib/x86_64-linux-gnu/libclang.so",
    ],
)];

/// Installs what is missing (as root, with apt-get; retried once) or says what to run.
fn prerequisites() -> Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(_, probes)| !probes.iter().any(|p| std::path::Path::new(p).exists()))
        .filter(|(_, _)| std::env::var_os("LIBCLANG_PATH").is_none())
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root =
        Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root {
        bail!("missing system packages; run:\n  sudo sh -c '{command}'");
    }
    for attempt in 1..=2 {
        eprintln!("xtask: installing {} (attempt {attempt})", missing.join(" "));
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("DEBIAN_FRONTEND=noninteractive {command}"))
            .status()?
            .success();
        if ok {
            return Ok(());
        }
    }
    bail!("could not install {}; run: {command}", missing.join(" "))
}

fn test(rest: &[String]) -> Result<()> {
    prerequisites()?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--all-targets", "--locked"]).args(rest);
    run(c)
}

fn ci(rest: &[String]) -> Result<()> {
    prerequisites()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]);
    run(clippy)?;
    test(rest)
}

fn devnet(rest: &[String]) -> Result<()> {
    prerequisites()?;
    // Build exactly as the test suite does (`--workspace --all-targets`): any other set of
    // packages unifies other features and would rebuild bundled RocksDB from scratch.
    let mut build = cargo();
    build.args(["test", "--workspace", "--all-targets", "--locked", "--no-run"]);
    run(build)?;
    let mut urbis = Command::new(target_dir()?.join("debug").join("urbis"));
    urbis.current_dir(root()).arg("devnet").args(rest);
    run(urbis)
}

/// The target directory cargo uses here (config and `CARGO_TARGET_DIR` included).
fn target_dir() -> Result<PathBuf> {
    let out = cargo().args(["metadata", "--format-version", "1", "--no-deps"]).output()?;
    let text = String::from_utf8(out.stdout)?;
    let key = "\"target_directory\":\"";
    let start = text.find(key).context("cargo metadata has no target_directory")? + key.len();
    let end = text[start..].find('"').context("malformed cargo metadata")? + start;
    Ok(PathBuf::from(&text[start..end]))
}

fn bench(rest: &[String]) -> Result<()> {
    prerequisites()?;
    let mut c = cargo();
    c.args(["bench", "--locked", "-p", "urbis-benches", "-p", "urbis-loadgen"]).args(rest);
    run(c)?;
    // The finality benchmark runs validators (QUIC, TLS, RocksDB): built with the whole
    // workspace's features, so it shares one release build of RocksDB with any other
    // workspace-wide release build.
    let mut c = cargo();
    c.args(["bench", "--locked", "--workspace", "--bench", "finality"]).args(rest);
    run(c)
}
