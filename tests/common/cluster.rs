//! A private Redis Cluster for the tests that crash its nodes (`kill -9`) or run it over
//! TLS: three primaries with a replica each, every redis-server a child of the test on
//! free loopback ports (its cluster bus port too, `cluster-port`), in a temp folder, all
//! killed when the value is dropped, a failing test included. The cluster `.ci/run` starts
//! (ports 7000-7005) is shared and never crashed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Pki;

/// How long a primary may be silent before the others count it failed: short, so a
/// crash is taken over within a few seconds (`cluster-node-timeout`).
const NODE_TIMEOUT_MS: u64 = 1000;

/// Six redis-servers forming one cluster.
pub struct PrivateCluster {
    nodes: Vec<Node>,
    /// `redis-cli` arguments that reach any node besides `-p` (`--tls --cacert ...`).
    cli: Vec<String>,
    tls: bool,
    pub dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl PrivateCluster {
    /// Starts the six nodes (append-only file, fsync every second), joins them into a
    /// cluster (`redis-cli --cluster create`, one replica per primary) and waits until every
    /// node says the cluster is ok. With `pki`, nodes speak TLS only, to clients, to each
    /// other on the cluster bus and for replication, with `server.pem` signed by its CA.
    pub async fn start(pki: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cli = match pki {
            Some(pki) => vec![
                "--tls".to_owned(),
                "--cacert".to_owned(),
                pki.path("ca.pem").display().to_string(),
            ],
            None => Vec::new(),
        };
        // Twelve distinct free ports (a client port and a bus port per node), all bound at
        // once so none is handed out twice.
        let mut held = Vec::new();
        for _ in 0..12 {
            held.push(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        }
        let mut free: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let (port, bus) = (free.pop().unwrap(), free.pop().unwrap());
            let folder = dir.path().join(port.to_string());
            std::fs::create_dir(&folder).unwrap();
            let mut args: Vec<String> = [
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                "--cluster-port",
                &bus.to_string(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--dir",
                &folder.display().to_string(),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            match pki {
                None => args.extend(["--port".to_owned(), port.to_string()]),
                Some(pki) => {
                    for (flag, value) in [
                        ("--port", "0".to_owned()),
                        ("--tls-port", port.to_string()),
                        ("--tls-cluster", "yes".to_owned()),
                        ("--tls-replication", "yes".to_owned()),
                        ("--tls-auth-clients", "no".to_owned()),
                        (
                            "--tls-cert-file",
                            pki.path("server.pem").display().to_string(),
                        ),
                        (
                            "--tls-key-file",
                            pki.path("server.key").display().to_string(),
                        ),
                        (
                            "--tls-ca-cert-file",
                            pki.path("ca.pem").display().to_string(),
                        ),
                    ] {
                        args.extend([flag.to_owned(), value]);
                    }
                }
            }
            nodes.push(Node {
                port,
                args,
                child: None,
            });
        }
        let mut cluster = Self {
            nodes,
            cli,
            tls: pki.is_some(),
            dir,
        };
        for port in cluster.ports() {
            cluster.run(port).await;
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let out = Command::new("redis-cli")
            .args(&cluster.cli)
            .args(&create)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli --cluster create: {out:?}");
        for port in cluster.ports() {
            cluster
                .until(&format!("node {port} to see the cluster ok"), || {
                    cluster.cluster_ok(port)
                })
                .await;
        }
        cluster
    }

    /// The nodes' client ports, in the order they were created (the first three start as
    /// primaries).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `state.url`'s list: every node, `rediss://` when the cluster speaks TLS.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.ports()
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect()
    }

    /// `redis-cli` with `args` against node `port`: its output, trimmed, if it answered.
    pub fn try_cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(&self.cli)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // redis-cli exits 0 after printing a connection error to stdout, too.
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// [`PrivateCluster::try_cli`] that must answer.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.try_cli(port, args)
            .unwrap_or_else(|| panic!("redis-cli -p {port} {args:?} did not answer"))
    }

    /// `master` or `slave` (`ROLE`'s first line), `None` for a node that does not answer.
    pub fn role(&self, port: u16) -> Option<String> {
        let role = self.try_cli(port, &["ROLE"])?;
        role.lines().next().map(str::to_owned)
    }

    fn cluster_ok(&self, port: u16) -> Option<()> {
        self.try_cli(port, &["CLUSTER", "INFO"])?
            .contains("cluster_state:ok")
            .then_some(())
    }

    /// The live primary holding keys that match `pattern` (a `SCAN` pattern).
    pub fn primary_with(&self, pattern: &str) -> u16 {
        self.ports()
            .into_iter()
            .filter(|&p| self.role(p).as_deref() == Some("master"))
            .find(|&p| !self.cli(p, &["--scan", "--pattern", pattern]).is_empty())
            .unwrap_or_else(|| panic!("no primary holds {pattern}"))
    }

    /// The replica of `primary`, once it is linked and has everything `primary` had
    /// written when asked: Redis replicates asynchronously, so a write the replica has not
    /// processed yet would be lost with a crashed primary. The replica's own processed
    /// offset is compared (`slave_repl_offset`), not the primary's view of it, which a
    /// replica acknowledges only once a second.
    pub async fn replica_in_sync(&self, primary: u16) -> u16 {
        self.until(
            &format!("a replica of {primary} to have its writes"),
            || {
                let info = self.try_cli(primary, &["INFO", "replication"])?;
                let written: u64 = field(&info, "master_repl_offset")?.parse().ok()?;
                let line = info.lines().find_map(|l| l.strip_prefix("slave0:"))?;
                let port: u16 = line
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("port="))?
                    .parse()
                    .ok()?;
                let theirs = self.try_cli(port, &["INFO", "replication"])?;
                let done: u64 = field(&theirs, "slave_repl_offset")?.parse().ok()?;
                (field(&theirs, "master_link_status") == Some("up") && done >= written)
                    .then_some(port)
            },
        )
        .await
    }

    /// `kill -9` of node `port`: nothing flushed beyond what it already wrote.
    pub fn kill(&mut self, port: u16) {
        let node = self.node(port);
        if let Some(mut child) = node.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits until `replica` took over (`ROLE` master) and the cluster is ok again as every
    /// live node sees it.
    pub async fn promoted(&self, replica: u16) {
        self.until(&format!("{replica} to be promoted"), || {
            (self.role(replica).as_deref() == Some("master")).then_some(())
        })
        .await;
        for port in self.ports() {
            if self.node_running(port) {
                self.until(&format!("node {port} to see the cluster ok"), || {
                    self.cluster_ok(port)
                })
                .await;
            }
        }
    }

    fn node_running(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|n| n.port == port && n.child.is_some())
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port}"))
    }

    /// Starts node `port` and waits until it answers PING.
    async fn run(&mut self, port: u16) {
        let node = self.node(port);
        let child = Command::new("redis-server")
            .args(&node.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        node.child = Some(child);
        self.until(&format!("node {port} to answer"), || {
            (self.try_cli(port, &["PING"]).as_deref() == Some("PONG")).then_some(())
        })
        .await;
    }

    /// Polls `check` every 20 ms until it gives something, for at most 20 s (an election
    /// takes two node timeouts and a random delay of up to a second).
    async fn until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of `name:` in an `INFO` answer.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
