//! What the admin listener tells about live conversations (GATEWAY.md 6, 10), on the real
//! server: each one's subscription, till, last decision and message, the `?till=` and
//! `?event=` filters with their exact refusals, `pollgate_conversations_active` counting only
//! unfinished ones, and the token on every data request the console makes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const POLLING: &str = "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n  scanCode:\n    rule: scan.rhai\n";

/// Keeps polling, fails once, then finishes: each call's decision is a different one.
const RULE: &str = r#"
if poll.attempt == 1 { keep_polling("ID check", "One moment") }
else if poll.attempt == 2 { throw "no ID reader" }
else { finish("ok") }
"#;
const SCAN: &str = r#"if event.scanCode.scannedCode == "bad" { reject("NO_ARTICLE", "Unknown article") } else { #{scanCode: #{recognized: true, message: "Card 42"}} }"#;

async fn gateway() -> Gateway {
    Gateway::start(POLLING, &[("rule.rhai", RULE), ("scan.rhai", SCAN)]).await
}

/// Conversation `n`'s addSessionLine body from till `branch`/`workplace` (`None`: no sender).
fn at_till(n: u32, counter: u32, till: Option<(i64, i64)>) -> Value {
    let mut b = body(n, counter);
    match till {
        Some((branch, workplace)) => {
            b["sender"]["branchNumber"] = json!(branch);
            b["sender"]["workplaceNumber"] = json!(workplace);
        }
        None => {
            b.as_object_mut().unwrap().remove("sender");
        }
    }
    b
}

async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let r = client().get(gw.admin_url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn list(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, text) = get(gw, &format!("/conversations{query}")).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn tills(list: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = list
        .iter()
        .map(|c| format!("{}/{}", c["till"]["branch"], c["till"]["workplace"]))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn conversations_are_filtered_by_till_and_event() {
    let gw = gateway().await;
    let till = gw.till();
    for (n, t) in [(1, (12, 3)), (2, (12, 4)), (3, (7, 1)), (4, (12, 3))] {
        till.call_json("addSessionLine", &at_till(n, 1, Some(t)))
            .await;
    }
    till.call_json("addSessionLine", &at_till(5, 1, None)).await;
    // A number a till cannot have is no till number.
    till.call_json("addSessionLine", &at_till(6, 1, Some((-1, 4_294_967_296))))
        .await;

    assert_eq!(tills(&list(&gw, "?till=12/3").await), ["12/3", "12/3"]);
    // Percent-encoded, as HTTP clients send a `/` in a query value.
    assert_eq!(tills(&list(&gw, "?till=12%2F3").await), ["12/3", "12/3"]);
    assert_eq!(
        tills(&list(&gw, "?till=12").await),
        ["12/3", "12/3", "12/4"]
    );
    assert_eq!(
        tills(&list(&gw, "?till=7/1&event=addSessionLine").await),
        ["7/1"]
    );
    assert!(list(&gw, "?till=7/1&event=scanCode").await.is_empty());
    assert!(list(&gw, "?till=99/1").await.is_empty());
    assert_eq!(list(&gw, "?till=12&limit=1").await.len(), 1);
    let all = list(&gw, "").await;
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter()
            .filter(|c| c["till"] == json!({"branch": null, "workplace": null}))
            .count(),
        2,
        "no sender, and numbers out of range: {all:?}"
    );
}

/// The till is the record's, whatever builds the conversation key: with a key and a rule
/// that never read `sender`, the listing still names the till (the body's parts a call
/// builds include it).
#[tokio::test]
async fn the_till_is_listed_when_neither_key_nor_rule_reads_it() {
    let config = format!("state:\n  key: [subscription, event, session]\n{POLLING}");
    let rule = r#"keep_polling("waiting")"#;
    let gw = Gateway::start(&config, &[("rule.rhai", rule), ("scan.rhai", SCAN)]).await;
    gw.till()
        .call_json("addSessionLine", &at_till(1, 1, Some((12, 3))))
        .await;
    assert_eq!(tills(&list(&gw, "").await), ["12/3"]);
    assert_eq!(tills(&list(&gw, "?till=12/3").await), ["12/3"]);
}

#[tokio::test]
async fn a_bad_till_filter_gets_400_with_the_exact_answer() {
    let gw = gateway().await;
    for bad in ["x", "12/", "/3", "12/3/4", "-1/2", "", "4294967296"] {
        let (status, text) = get(&gw, &format!("/conversations?till={bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            text,
            format!(
                r#"{{"error":{{"code":"INVALID_QUERY","message":"till: `{bad}` is not BRANCH/WORKPLACE or BRANCH (whole numbers, e.g. till=12/3)"}}}}"#
            ),
            "{bad}"
        );
    }
}

async fn detail(gw: &Gateway, key: &str) -> Value {
    let (status, text) = get(gw, &format!("/conversations/{key}")).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn said(c: &Value) -> (&Value, &Value, &Value, &Value) {
    (
        &c["decision"],
        &c["message"],
        &c["customer_message"],
        &c["finished"],
    )
}

#[tokio::test]
async fn the_last_decision_and_its_messages_follow_the_conversation() {
    let gw = gateway().await;
    let till = gw.till();
    till.call_json("addSessionLine", &at_till(1, 1, Some((12, 3))))
        .await;
    let listed = list(&gw, "").await;
    let key = listed[0]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        said(&listed[0]),
        (
            &json!("keep_polling"),
            &json!("ID check"),
            &json!("One moment"),
            &json!(false)
        )
    );
    assert_eq!(said(&detail(&gw, &key).await), said(&listed[0]));

    // The rule fails: the fail-safe answer is what the conversation last said, and it
    // goes on (a retry after a fix runs the rule again).
    let failed = till
        .call_json("addSessionLine", &at_till(1, 2, Some((12, 3))))
        .await;
    let cashier = failed.message().unwrap();
    let d = detail(&gw, &key).await;
    assert_eq!(
        said(&d),
        (
            &json!("rule_error"),
            &json!(cashier),
            &Value::Null,
            &json!(false)
        )
    );
    assert_eq!(d["final_answer"], Value::Null);

    till.call_json("addSessionLine", &at_till(1, 3, Some((12, 3))))
        .await;
    let d = detail(&gw, &key).await;
    assert_eq!(
        said(&d),
        (&json!("finished"), &json!("ok"), &Value::Null, &json!(true))
    );
    // A replay does not change it.
    till.call_json("addSessionLine", &at_till(1, 4, Some((12, 3))))
        .await;
    assert_eq!(said(&detail(&gw, &key).await), said(&d));

    // Other events: a message inside the answer's own object, and a rejection's message.
    let scan = |code: &str| json!({"sender": {"branchNumber": 2, "workplaceNumber": 1}, "scanCode": {"scannedCode": code}});
    till.call_json("scanCode", &scan("42")).await;
    till.call_json("scanCode", &scan("bad")).await;
    let scans = list(&gw, "?event=scanCode").await;
    let mut seen: Vec<(&Value, &Value, &Value, &Value)> = scans.iter().map(said).collect();
    seen.sort_by_key(|s| s.0.to_string());
    assert_eq!(
        seen,
        [
            (
                &json!("answered"),
                &json!("Card 42"),
                &Value::Null,
                &json!(true)
            ),
            (
                &json!("rejected"),
                &json!("Unknown article"),
                &Value::Null,
                &json!(true)
            ),
        ]
    );
}

#[tokio::test]
async fn conversations_active_counts_only_unfinished_conversations() {
    let gw = gateway().await;
    let till = gw.till();
    let active = r#"pollgate_conversations_active"#;
    for n in 1..=3 {
        till.call_json("addSessionLine", &at_till(n, 1, Some((1, n.into()))))
            .await;
    }
    till.call_json("scanCode", &json!({"scanCode": {"scannedCode": "42"}}))
        .await;
    assert_eq!(list(&gw, "").await.len(), 4, "four live conversations");
    assert_eq!(
        gw.metric(active).await,
        3.0,
        "the finished scanCode is not active"
    );
    // Conversation 1 fails once (still going on), then finishes.
    till.call_json("addSessionLine", &at_till(1, 2, Some((1, 1))))
        .await;
    assert_eq!(gw.metric(active).await, 3.0);
    till.call_json("addSessionLine", &at_till(1, 3, Some((1, 1))))
        .await;
    assert_eq!(gw.metric(active).await, 2.0);
    assert_eq!(
        list(&gw, "").await.len(),
        4,
        "finished ones are still listed"
    );
}

#[tokio::test]
async fn an_unknown_conversation_or_delivery_gets_404_with_the_exact_answer() {
    let gw = gateway().await;
    let missing = r#"{"error":{"code":"NO_CONVERSATION","message":"no live conversation has this key (32 hex digits, as GET /conversations lists them)"}}"#;
    for key in [
        "0123456789abcdef0123456789abcdef",
        "0123456789ABCDEF0123456789ABCDEZ",
        "12",
        "",
    ] {
        let (status, text) = get(&gw, &format!("/conversations/{key}")).await;
        assert_eq!((status, text.as_str()), (404, missing), "{key}");
    }
    for id in ["00000000000000000000000000000001", "not-an-id"] {
        let r = client()
            .post(gw.admin_url(&format!("/deliveries/{id}/retry")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id}");
        assert_eq!(
            r.text().await.unwrap(),
            format!(
                r#"{{"error":{{"code":"NOT_FOUND","message":"no delivery `{id}` (GET /deliveries lists them)"}}}}"#
            )
        );
    }
}

/// Every request the console's page makes, as it makes them.
const CONSOLE_REQUESTS: [(&str, &str); 6] = [
    ("GET", "/conversations?limit=200"),
    ("GET", "/conversations?limit=200&till=12/3"),
    ("GET", "/deliveries?limit=100"),
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("POST", "/deliveries/00000000000000000000000000000001/retry"),
];

#[tokio::test]
async fn the_consoles_data_requests_need_the_token_and_its_page_does_not() {
    let config = format!("admin:\n  token: console-token\n{POLLING}");
    let gw = Gateway::start(&config, &[("rule.rhai", RULE), ("scan.rhai", SCAN)]).await;
    gw.till()
        .call_json("addSessionLine", &at_till(1, 1, Some((12, 3))))
        .await;
    let page = client().get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (_, key) = {
        let r = client()
            .get(gw.admin_url("/conversations"))
            .bearer_auth("console-token")
            .send()
            .await
            .unwrap();
        let list: Vec<Value> = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        ((), list[0]["key"].as_str().unwrap().to_owned())
    };
    let detail = format!("/conversations/{key}");
    let requests = CONSOLE_REQUESTS
        .iter()
        .map(|(m, p)| (*m, (*p).to_owned()))
        .chain([("GET", detail)]);
    let missing = r#"{"error":{"code":"UNAUTHORIZED","message":"this endpoint needs an Authorization: Bearer <admin.token> header"}}"#;
    let wrong =
        r#"{"error":{"code":"UNAUTHORIZED","message":"the bearer token is not valid here"}}"#;
    for (method, path) in requests {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let send = |token: Option<&str>| {
            let mut r = client().request(method.clone(), gw.admin_url(&path));
            if let Some(token) = token {
                r = r.bearer_auth(token);
            }
            r.send()
        };
        let r = send(None).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.text().await.unwrap(), missing, "{path}");
        let r = send(Some("console-tokeN")).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(r.text().await.unwrap(), wrong, "{path}");
        let r = send(Some("console-token")).await.unwrap();
        assert_ne!(r.status(), 401, "{path} with the token");
    }
}
