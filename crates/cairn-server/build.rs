//! Fetches the dashboard's one third-party library (uPlot, pinned in
//! `ui/package.json` + `ui/package-lock.json`) with `npm ci` into `OUT_DIR`
//! and leaves its two files there for `include_bytes!` (see `src/ui.rs`).
//!
//! Why here and not a committed copy: the project never copies a library's
//! code into the repository; the lockfile pins the exact tarball by hash, so
//! every build embeds the same bytes. Why `OUT_DIR`: a fresh clone needs no
//! extra step, `cargo build` is enough, and nothing lands in the work tree.
//!
//! Without npm (or without network and an empty npm cache) the build does
//! not fail: it warns and embeds empty files, and the dashboard then says
//! on the page that its charts were not built in. Set
//! `CAIRN_UI_REQUIRE_CHARTS=1` to make that a build error instead (CI does).

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: [(&str, &str); 2] = [
    (
        "uPlot.iife.min.js",
        "node_modules/uplot/dist/uPlot.iife.min.js",
    ),
    ("uPlot.min.css", "node_modules/uplot/dist/uPlot.min.css"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ui = manifest.join("../../ui");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    for f in ["package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", ui.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CAIRN_UI_REQUIRE_CHARTS");
    println!("cargo:rerun-if-env-changed=CAIRN_NPM");

    let work = out.join("npm");
    let fetched = fetch(&ui, &work);
    let dest = out.join("ui-vendor");
    std::fs::create_dir_all(&dest).expect("create OUT_DIR/ui-vendor");
    match fetched {
        Ok(()) => {
            for (name, from) in FILES {
                std::fs::copy(work.join(from), dest.join(name))
                    .unwrap_or_else(|e| panic!("copy {from} out of npm's tree: {e}"));
            }
            println!("cargo:rustc-env=CAIRN_UI_CHARTS=1");
        }
        Err(why) => {
            if std::env::var_os("CAIRN_UI_REQUIRE_CHARTS").is_some_and(|v| v == "1") {
                panic!(
                    "the dashboard's charting library could not be fetched: {why}\n\
                     install Node.js + npm (e.g. `apt-get install npm`) or unset CAIRN_UI_REQUIRE_CHARTS"
                );
            }
            println!(
                "cargo:warning=dashboard built WITHOUT charts: {why} (install Node.js + npm and rebuild; see README)"
            );
            for (name, _) in FILES {
                std::fs::write(dest.join(name), b"").expect("write placeholder");
            }
            println!("cargo:rustc-env=CAIRN_UI_CHARTS=0");
        }
    }
}

/// `npm ci` of `ui`'s lockfile in `work`; already done when the installed
/// lockfile matches.
fn fetch(ui: &Path, work: &Path) -> Result<(), String> {
    let lock = std::fs::read(ui.join("package-lock.json"))
        .map_err(|e| format!("read ui/package-lock.json: {e}"))?;
    let installed = work.join("node_modules/.package-lock.json");
    let done_marker = work.join("installed-lock.json");
    if installed.exists()
        && std::fs::read(&done_marker).is_ok_and(|l| l == lock)
        && FILES.iter().all(|(_, f)| work.join(f).exists())
    {
        return Ok(());
    }
    std::fs::create_dir_all(work).map_err(|e| format!("create {}: {e}", work.display()))?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(ui.join(f), work.join(f)).map_err(|e| format!("copy ui/{f}: {e}"))?;
    }
    let npm = std::env::var("CAIRN_NPM").unwrap_or_else(|_| "npm".into());
    let output = Command::new(&npm)
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(work)
        .output()
        .map_err(|e| format!("`{npm} ci` could not start ({e}): is npm installed?"))?;
    if !output.status.success() {
        return Err(format!(
            "`{npm} ci` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    std::fs::write(&done_marker, &lock).map_err(|e| format!("write marker: {e}"))?;
    Ok(())
}
