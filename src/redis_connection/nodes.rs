//! Commands for one node: what an admin walk over every key needs (`SCAN` per primary on
//! a cluster, then the keys found read where they live). Off the call path.

use redis::aio::ConnectionManager;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Value};

use super::{Link, RedisConnection};

/// Where a walk over the keys goes: the one Redis, or one primary of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Only,
    Primary { host: String, port: u16 },
}

impl RedisConnection {
    /// Every node holding keys: the one Redis, or each primary of the cluster as it now
    /// stands (`CLUSTER NODES`, failed ones left out).
    pub(crate) async fn key_nodes(&self) -> RedisResult<Vec<Node>> {
        let Some(mut cluster) = self.cluster().await? else {
            return Ok(vec![Node::Only]);
        };
        let mut ask = redis::cmd("CLUSTER");
        ask.arg("NODES");
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
        let value = cluster.route_command(ask, routing).await?;
        let text: String = FromRedisValue::from_redis_value(value)?;
        // The node asked may not have heard of a failover yet: each listed primary says
        // what it is (`ROLE`), and one that became a replica names its new primary.
        let mut out = Vec::new();
        for node in primaries(&text) {
            let role: Value = self.query_on(&node, &redis::cmd("ROLE")).await?;
            let node = replaced_by(&role).unwrap_or(node);
            if !out.contains(&node) {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// `cmd` on `node`.
    pub(crate) async fn query_on<T: FromRedisValue>(
        &self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self.node_connection(node)? {
            Some(mut conn) => cmd.query_async(&mut conn).await,
            None => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// `pipeline` on `node`: its commands' answers, in order.
    pub(crate) async fn pipeline_on(
        &self,
        node: &Node,
        pipeline: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        match self.node_connection(node)? {
            Some(mut conn) => pipeline.query_async(&mut conn).await,
            None => pipeline.query_async(&mut self.clone()).await,
        }
    }

    /// A connection to one primary of a cluster (`None` for the one Redis). Not the
    /// cluster client's: that one knows only the nodes it saw at its last look, and a
    /// primary just promoted is listed by `CLUSTER NODES` before it is known there.
    fn node_connection(&self, node: &Node) -> RedisResult<Option<ConnectionManager>> {
        match (node, &self.inner.link) {
            (Node::Primary { host, port }, Link::Cluster { direct, .. }) => {
                direct.node(host, *port).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The primary a replica's `ROLE` names (`["slave", host, port, ...]`); `None` for a primary.
fn replaced_by(role: &Value) -> Option<Node> {
    let Value::Array(fields) = role else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    if text(fields.first()?)? != "slave" {
        return None;
    }
    let port = match fields.get(2)? {
        Value::Int(port) => u16::try_from(*port).ok()?,
        _ => return None,
    };
    Some(Node::Primary {
        host: text(fields.get(1)?)?,
        port,
    })
}

/// The primaries in a `CLUSTER NODES` answer: lines of `id host:port@bus[,name] flags ...`.
fn primaries(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, address, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.contains(&"fail") {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(Node::Primary {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_names_its_primary_and_a_primary_nobody() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(7003),
            bulk("connected"),
            Value::Int(42),
        ]);
        assert_eq!(
            replaced_by(&replica),
            Some(Node::Primary {
                host: "127.0.0.1".into(),
                port: 7003
            })
        );
        let primary = Value::Array(vec![bulk("master"), Value::Int(42), Value::Array(vec![])]);
        assert_eq!(replaced_by(&primary), None);
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes_leaving_out_replicas_and_failed_ones() {
        let text = "\
07c3 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:7001@17001,redis-1 master - 0 1426238317239 2 connected 5461-10922
292f 127.0.0.1:7002@17002 master,fail - 1426238316232 1426238315000 3 connected
6ec2 127.0.0.1:7003@17003 slave 07c3 0 1426238316232 1 connected
";
        assert_eq!(
            primaries(text),
            vec![
                Node::Primary {
                    host: "127.0.0.1".into(),
                    port: 7000
                },
                Node::Primary {
                    host: "127.0.0.1".into(),
                    port: 7001
                },
            ]
        );
    }
}
