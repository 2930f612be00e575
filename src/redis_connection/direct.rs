//! The cluster's short way: a script on one slot goes straight to the connection of the
//! primary serving that slot, as a single Redis's command does, instead of through the
//! cluster client's own task. That task is a second hand-over per command (a channel to it,
//! a boxed request, the node's connection, and the answer back the same way), and it cost
//! about 7 µs of pollgate's CPU per call on a cluster of one node against the same Redis
//! unclustered (README, "Performance").
//!
//! The slot table comes from `CLUSTER SLOTS`, asked by [`super::watch`] at each look (once a
//! second) and again soon after any miss. Whatever the short way cannot take goes the long
//! way, through the cluster client, which follows `MOVED` and `ASK` and learns a new primary
//! by itself: no table yet, a slot without a primary, a command that is not a script, and a
//! script a node redirected (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`: not run, so sent
//! again), and a script whose connection broke or was refused (a primary that died), which
//! the cluster client sends again as it does with its own. Each miss has the table asked
//! afresh soon after.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
    ServerErrorKind, TlsCertificates, Value,
};

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The short way's state, one per cluster connection.
pub(super) struct Direct {
    table: ArcSwapOption<Table>,
    /// What every node connection is made of: the first configured URL (user, password,
    /// database, TLS or not), its address replaced by the node's.
    template: ConnectionInfo,
    certificates: Option<TlsCertificates>,
    config: ConnectionManagerConfig,
    /// Set by a miss: the table is asked afresh at the next look, which comes at once.
    stale: AtomicBool,
    pub(super) miss: tokio::sync::Notify,
    /// Commands answered the short way (for the tests).
    #[cfg(test)]
    pub(super) short: std::sync::atomic::AtomicU64,
}

/// Which primary serves each slot, and a connection to each.
struct Table {
    /// `CLUSTER SLOTS` as it was read: `(first, last, host, port)` per range.
    ranges: Vec<(u16, u16, String, u16)>,
    /// An index into `nodes` per slot; `u16::MAX` for a slot no primary serves.
    owner: Vec<u16>,
    nodes: Vec<((String, u16), ConnectionManager)>,
}

impl Direct {
    pub(super) fn new(
        url: &str,
        certificates: Option<TlsCertificates>,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        Ok(Self {
            table: ArcSwapOption::empty(),
            template: url.into_connection_info()?,
            certificates,
            config,
            stale: AtomicBool::new(false),
            miss: tokio::sync::Notify::new(),
            #[cfg(test)]
            short: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The connection of the primary serving the slot of `cmd`'s key, when `cmd` is a
    /// script with keys and the table knows the slot.
    pub(super) fn connection_for(&self, cmd: &Cmd) -> Option<ConnectionManager> {
        let key = script_key(cmd)?;
        let table = self.table.load();
        let table = table.as_deref()?;
        let index = *table.owner.get(usize::from(slot(key)))?;
        table
            .nodes
            .get(usize::from(index))
            .map(|(_, conn)| conn.clone())
    }

    /// Sends `cmd` the short way on `conn`: its answer, or `None` when it must go the long
    /// way (a node redirected it, so it did not run).
    pub(super) async fn send(
        &self,
        mut conn: ConnectionManager,
        cmd: &Cmd,
    ) -> Option<RedisResult<Value>> {
        let answer = conn.req_packed_command(cmd).await;
        let redirected = match &answer {
            Ok(Value::ServerError(e)) => redirect(&RedisError::from(e.clone())),
            Ok(_) => false,
            // A broken or refused connection goes the long way too, which is what the
            // cluster client does with it (a primary that died: the long way learns
            // its successor).
            Err(e) => {
                redirect(e)
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
        };
        if redirected {
            self.missed();
            return None;
        }
        #[cfg(test)]
        self.short.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    fn missed(&self) {
        self.stale.store(true, Ordering::Relaxed);
        self.miss.notify_one();
    }

    /// Whether a miss asked for the table since the last refresh.
    pub(super) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Forgets the table: every command goes the long way until [`Direct::refresh`].
    pub(super) fn clear(&self) {
        self.table.store(None);
    }

    /// Takes a `CLUSTER SLOTS` answer: a new table when the ranges changed, the connections
    /// to primaries already known kept.
    pub(super) fn refresh(&self, answer: &Value) -> RedisResult<()> {
        self.stale.store(false, Ordering::Relaxed);
        let ranges = ranges(answer).ok_or_else(|| {
            RedisError::from((ErrorKind::Parse, "unreadable CLUSTER SLOTS answer"))
        })?;
        let old = self.table.load_full();
        if old.as_ref().is_some_and(|t| t.ranges == ranges) {
            return Ok(());
        }
        let mut known: HashMap<(String, u16), ConnectionManager> =
            old.iter().flat_map(|t| t.nodes.iter().cloned()).collect();
        let mut owner = vec![u16::MAX; SLOTS];
        let mut nodes: Vec<((String, u16), ConnectionManager)> = Vec::new();
        for (first, last, host, port) in &ranges {
            // `?`: the node's address is unknown (`cluster-preferred-endpoint-type
            // unknown-endpoint`), so its slots go the long way.
            if host == "?" {
                continue;
            }
            // Empty: the node does not know its own address (a cluster of one node that
            // never met another): the one configured.
            let host = match (host.as_str(), self.template.addr()) {
                (
                    "",
                    ConnectionAddr::Tcp(configured, _)
                    | ConnectionAddr::TcpTls {
                        host: configured, ..
                    },
                ) => configured,
                _ => host,
            };
            let address = (host.clone(), *port);
            let index = match nodes.iter().position(|(a, _)| *a == address) {
                Some(index) => index,
                None => {
                    let conn = match known.remove(&address) {
                        Some(conn) => conn,
                        None => self.connect(host, *port)?,
                    };
                    nodes.push((address, conn));
                    nodes.len() - 1
                }
            };
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            let last = usize::from(*last).min(SLOTS - 1);
            if let Some(range) = owner.get_mut(usize::from(*first)..=last) {
                range.fill(index);
            }
        }
        self.table.store(Some(Arc::new(Table {
            ranges,
            owner,
            nodes,
        })));
        Ok(())
    }

    /// A connection to the node at `host:port`: the table's, or a new one.
    pub(super) fn node(&self, host: &str, port: u16) -> RedisResult<ConnectionManager> {
        let known = self.table.load().as_deref().and_then(|table| {
            table
                .nodes
                .iter()
                .find(|((h, p), _)| h == host && *p == port)
                .map(|(_, conn)| conn.clone())
        });
        match known {
            Some(conn) => Ok(conn),
            None => self.connect(host, port),
        }
    }

    /// A connection to one primary, made when first used.
    fn connect(&self, host: &str, port: u16) -> RedisResult<ConnectionManager> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let info = self.template.clone().set_addr(addr);
        let client = match &self.certificates {
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())?,
            None => redis::Client::open(info)?,
        };
        ConnectionManager::new_lazy_with_config(client, self.config.clone())
    }
}

/// A redirect or a cluster in transition: the node did not run the command.
fn redirect(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    )
}

/// The first key of an `EVALSHA` or `EVAL` with keys (a script's keys share one slot).
fn script_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()??;
    if !name.eq_ignore_ascii_case(b"EVALSHA") && !name.eq_ignore_ascii_case(b"EVAL") {
        return None;
    }
    let _script = args.next()??;
    let keys = std::str::from_utf8(args.next()??).ok()?;
    if keys.parse::<u32>().ok()? == 0 {
        return None;
    }
    args.next()?
}

/// `CLUSTER SLOTS`: `[[first, last, [host, port, id, ...], replicas...], ...]`.
fn ranges(answer: &Value) -> Option<Vec<(u16, u16, String, u16)>> {
    let Value::Array(entries) = answer else {
        return None;
    };
    let mut out = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return None;
        };
        let (Value::Int(first), Value::Int(last), Value::Array(primary)) =
            (fields.first()?, fields.get(1)?, fields.get(2)?)
        else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        out.push((
            u16::try_from(*first).ok()?,
            u16::try_from(*last).ok()?,
            host,
            u16::try_from(*port).ok()?,
        ));
    }
    out.sort();
    Some(out)
}

/// A key's slot: CRC16 (XMODEM) of its hash tag, or of the whole key without one, modulo
/// 16384, as Redis Cluster defines it.
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let index = usize::from(((crc >> 8) ^ u16::from(b)) & 0xff);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

/// CRC16-CCITT (XMODEM, polynomial 0x1021), a byte at a time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster_including_hash_tags() {
        // Redis's own examples (CLUSTER KEYSLOT) and the spec's test vector.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), 8363);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{pg:outbox:erp}:due"), slot(b"pg:outbox:erp"));
    }

    #[test]
    fn cluster_slots_are_read_as_ranges_of_primaries() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
                node("10.0.0.5", 7004),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("", 7000)]),
        ]);
        assert_eq!(
            ranges(&answer),
            Some(vec![
                (0, 5460, String::new(), 7000),
                (5461, 16383, "10.0.0.2".to_owned(), 7001),
            ])
        );
        assert_eq!(ranges(&Value::Int(1)), None);
    }

    #[test]
    fn only_scripts_with_keys_take_the_short_way() {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg("abc").arg(1).arg("k1").arg("v");
        assert_eq!(script_key(&evalsha), Some(&b"k1"[..]));
        let mut keyless = redis::cmd("EVALSHA");
        keyless.arg("abc").arg(0);
        assert_eq!(script_key(&keyless), None);
        assert_eq!(script_key(redis::cmd("HGETALL").arg("k1")), None);
    }
}
