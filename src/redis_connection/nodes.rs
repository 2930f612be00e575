//! Commands for one node: what an admin walk over every key needs (`SCAN` per primary on
//! a cluster, then the keys found read where they live). Off the call path.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Value};

use super::RedisConnection;

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
        Ok(primaries(&text))
    }

    /// `cmd` on `node`.
    pub(crate) async fn query_on<T: FromRedisValue>(
        &self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match (node, self.cluster().await?) {
            (Node::Primary { host, port }, Some(mut cluster)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = cluster.route_command(cmd.clone(), routing).await?;
                Ok(FromRedisValue::from_redis_value(value)?)
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// `pipeline` on `node`: its commands' answers, in order.
    pub(crate) async fn pipeline_on(
        &self,
        node: &Node,
        pipeline: &Pipeline,
    ) -> RedisResult<Vec<Value>> {
        match (node, self.cluster().await?) {
            (Node::Primary { host, port }, Some(mut cluster)) => {
                let routing = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                let count = pipeline.len();
                cluster
                    .route_pipeline(pipeline.clone(), 0, count, routing)
                    .await
            }
            _ => pipeline.query_async(&mut self.clone()).await,
        }
    }
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
