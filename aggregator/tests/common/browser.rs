//! Headless Chromium for the console tests: load a page, let its
//! JavaScript run, keep a screenshot, read the rendered DOM.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("Chromium is needed for the console tests: `bash deploy/setup.sh` installs Debian's chromium");
}

pub fn screenshots() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads `url` headless (JavaScript runs for up to 10 s of virtual time),
/// saves a screenshot, and returns the rendered DOM.
pub fn render(url: &str, shot: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut c = Command::new(chromium());
    base(&mut c);
    let out = c.arg("--dump-dom").arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = Command::new(chromium());
    base(&mut s);
    let st = s
        .arg(format!(
            "--screenshot={}",
            screenshots().join(shot).display()
        ))
        .arg(url)
        .output()
        .unwrap();
    assert!(st.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Text of the first element with `data-test="name"`.
pub fn field(dom: &str, name: &str) -> String {
    let key = format!("data-test=\"{name}\"");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find("</").unwrap();
    // Strip inner tags such as <a ...>.
    let inner = &rest[start..start + end];
    let text = match inner.rfind('>') {
        Some(i) => &inner[i + 1..],
        None => inner,
    };
    text.trim().to_string()
}

pub fn number(s: &str) -> u64 {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s}"))
}
