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
    render_with(url, shot, &[])
}

/// [`render`] with extra Chromium flags (`--force-dark-mode`, ...).
pub fn render_with(url: &str, shot: &str, flags: &[&str]) -> String {
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
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut c = Command::new(chromium());
    base(&mut c);
    let out = super::run_ok(c.arg("--dump-dom").arg(url));
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

/// A WebDriver session on Debian's headless Chromium through its
/// chromedriver, for tests that click, type and read like an analyst. Each
/// call blocks until the browser answered.
pub struct Driver {
    rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    chromedriver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub fn start() -> Driver {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "chromedriver is needed: `bash deploy/setup.sh` installs Debian's chromium-driver",
            );
        let port = super::free_port();
        let chromedriver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let client = rt.block_on(async {
            let t0 = std::time::Instant::now();
            loop {
                let c = fantoccini::ClientBuilder::new(
                    hyper_util::client::legacy::connect::HttpConnector::new(),
                )
                .capabilities(caps.clone())
                .connect(&url)
                .await;
                match c {
                    Ok(c) => break c,
                    Err(e) if t0.elapsed() > std::time::Duration::from_secs(20) => {
                        panic!("chromedriver session: {e}")
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        Driver {
            rt,
            client: Some(client),
            chromedriver,
            _profile: profile,
        }
    }

    fn c(&self) -> &fantoccini::Client {
        self.client.as_ref().unwrap()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    /// The address bar.
    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .unwrap()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn js(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.rt.block_on(self.c().execute(script, args)).unwrap()
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            let e = self
                .c()
                .find(fantoccini::Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            e.click().await.unwrap();
        });
    }

    /// Replaces the text of the input matching `css` with `text`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self.c().find(fantoccini::Locator::Css(css)).await.unwrap();
            e.clear().await.unwrap();
            e.send_keys(text).await.unwrap();
        });
    }

    /// Picks `value` in the `<select>` matching `css`.
    pub fn select(&self, css: &str, value: &str) {
        self.rt.block_on(async {
            let e = self.c().find(fantoccini::Locator::Css(css)).await.unwrap();
            e.select_by_value(value).await.unwrap();
        });
    }

    /// Forgets which page last finished rendering (call before an action).
    pub fn unready(&self) {
        self.js("document.body.dataset.ready = ''", vec![]);
    }

    /// Waits (up to 15 s) until the console says `page` finished rendering
    /// (`<body data-ready="page">`) and charts had time to draw.
    pub fn wait_ready(&self, page: &str) {
        let t0 = std::time::Instant::now();
        loop {
            let v = self.js("return document.body.dataset.ready || ''", vec![]);
            if v == page {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(15),
                "page '{page}' never finished; it says '{v}' at {}",
                self.url()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    /// Text of the first element with `data-test="name"`.
    pub fn text(&self, name: &str) -> String {
        let v = self.js(
            "const e = document.querySelector(`[data-test=\"${arguments[0]}\"]`); return e ? e.textContent.trim() : null",
            vec![name.into()],
        );
        v.as_str()
            .unwrap_or_else(|| panic!("no data-test=\"{name}\" at {}", self.url()))
            .to_string()
    }

    /// Saves a screenshot under `target/screenshots/`.
    pub fn shot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        std::fs::write(screenshots().join(name), png).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}
