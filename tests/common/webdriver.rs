//! A W3C WebDriver client for the console tests: Debian's `chromedriver` driving headless
//! `chromium`, spoken to as plain JSON over HTTP with the reqwest the crate already has
//! (a dependency such as fantoccini would bring its own HTTP stack for the dozen commands
//! these tests send). The driver is a child process of the test, killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver names an element (W3C WebDriver, "web element identifier").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether chromium and chromedriver are here; outside CI a missing one is a skip.
pub fn have_browser() -> bool {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(path).exists() {
            super::skip_outside_ci(&format!(
                "{path} is not installed (apt-get install {package})"
            ));
            return false;
        }
    }
    true
}

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// An element of the page, as the driver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session of
    /// `width` x `height` pixels.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
            _profile: profile,
        };
        browser.wait_for_driver().await;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let session = browser.send("POST", "/session", Some(caps)).await;
        let id = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn wait_for_driver(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .http
                .get(format!("{}/status", self.base))
                .send()
                .await
                .ok();
            if let Some(r) = ready {
                let status: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                if status["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One command; its `value`, or a panic with the driver's error.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let r = request.send().await.expect("chromedriver answers");
        let status = r.status();
        let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(status.is_success(), "{url}: {status} {answer}");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.send("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// Every element matching the CSS `selector`, now.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self
            .send(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The first element matching `selector`, waiting for it up to a deadline (the page
    /// refreshes itself every few seconds).
    pub async fn find(&self, selector: &str) -> Element {
        super::eventually(&format!("an element `{selector}`"), || async {
            self.find_all(selector).await.into_iter().next()
        })
        .await
    }

    pub async fn text(&self, element: &Element) -> String {
        let path = format!("/element/{}/text", element.0);
        self.send("GET", &path, None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        let path = format!("/element/{}/attribute/{name}", element.0);
        self.send("GET", &path, None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    pub async fn displayed(&self, element: &Element) -> bool {
        let path = format!("/element/{}/displayed", element.0);
        self.send("GET", &path, None).await == true
    }

    pub async fn type_text(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.send("POST", &path, Some(json!({"text": text}))).await;
    }

    pub async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        self.send("POST", &path, Some(json!({}))).await;
    }

    /// Runs `script` in the page and gives back what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.send("POST", "/execute/sync", Some(body)).await
    }

    /// The window as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.send("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    /// Ends the session, so the driver closes its browser (killing the driver alone would
    /// leave chromium running), then stops the driver this test started, by its handle.
    /// Blocking and by hand: a drop cannot await, and it runs after a failed assertion too.
    fn drop(&mut self) {
        use std::io::{Read as _, Write as _};
        let url = self.base.strip_prefix("http://").unwrap_or_default();
        if let Some((addr, path)) = url.split_once('/') {
            if let Ok(mut conn) = std::net::TcpStream::connect(addr) {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                let request = format!(
                    "DELETE /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(request.as_bytes());
                // The answer comes once the session (and its browser) is gone.
                let _ = conn.read(&mut [0; 512]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
