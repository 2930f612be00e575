//! Private redis-servers for the tests that stop, restart or fail over Redis: each on a
//! free loopback port in its own folder (its append-only file survives a restart there),
//! killed when dropped. The shared Redis on 6379 is never touched this way.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{closed_port, eventually};

/// One redis-server, started and stopped as the test says.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    /// `redis-cli` arguments that reach it (`--tls --cacert ...` for a TLS one).
    cli: Vec<String>,
}

/// Whether `redis-server` is on PATH (else the caller skips, outside CI).
pub fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl PrivateRedis {
    /// A free port and a folder; nothing runs until [`PrivateRedis::start`]. With
    /// `persistent`, every write is in the append-only file before Redis answers
    /// (`appendfsync always`), so a restart keeps everything acknowledged.
    pub async fn planned(persistent: bool) -> Self {
        let port = closed_port().await.port();
        let dir = tempfile::tempdir().unwrap();
        let aof = if persistent { "yes" } else { "no" };
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            aof,
            "--appendfsync",
            "always",
        ];
        Self {
            child: None,
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli: vec!["-p".into(), port.to_string()],
        }
    }

    /// Like [`PrivateRedis::planned`], serving TLS only, with `cert`/`key` (PEM files) and
    /// `ca` for `redis-cli`.
    pub async fn planned_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let mut r = Self::planned(false).await;
        let port = r.port.to_string();
        let mut args = vec![
            "--port",
            "0",
            "--tls-port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        for (flag, path) in [
            ("--tls-cert-file", cert),
            ("--tls-key-file", key),
            ("--tls-ca-cert-file", ca),
        ] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        r.cli = vec![
            "-p".into(),
            port,
            "--tls".into(),
            "--cacert".into(),
            ca.display().to_string(),
        ];
        r.args = args;
        r
    }

    /// The default user needs `password` (`requirepass`).
    pub fn require_password(&mut self, password: &str) {
        self.args
            .extend(["--requirepass".to_owned(), password.to_owned()]);
        self.cli.extend([
            "-a".to_owned(),
            password.to_owned(),
            "--no-auth-warning".to_owned(),
        ]);
    }

    /// Starts it (again) and waits until it answers PING.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        eventually("the private redis-server to answer", || async {
            (self.cli(&["PING"]).as_deref() == Some("PONG")).then_some(())
        })
        .await;
    }

    /// `redis-cli` with `args` against it: its output, trimmed, if it ran.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(&self.cli)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `kill -9`: nothing is flushed beyond what the append-only file already holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server process (SIGSTOP): connections stay open and nothing answers until
    /// [`PrivateRedis::thaw`], however long the test takes to look.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
