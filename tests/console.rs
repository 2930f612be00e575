//! The operator's console (GATEWAY.md 10) in a real browser: Debian's headless Chromium
//! loads `GET /` of a real gateway with live conversations, and what the page shows after
//! its scripts ran (`--dump-dom`) is checked. `.ci/run` installs chromium when missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

const LIVE: &str = "events:\n  addSessionLine:\n    rule: rule.rhai\n    polling: {}\n";
const RULE: &str = "if poll.attempt < 3 { keep_polling(\"ID check\") } else { finish(\"ok\") }";

/// Chromium as the machine's probe starts it: headless, no sandbox (root), no background
/// networking (this machine's network is closed), a fresh profile.
fn chromium(profile: &Path, args: &[String]) -> String {
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            // Virtual time waits for the page's fetches before the DOM is dumped.
            "--virtual-time-budget=4000",
            "--window-size=1280,760",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn dump_dom(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        chromium(profile.path(), &["--dump-dom".to_owned(), url])
    })
    .await
    .unwrap()
}

fn have_chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    skip_outside_ci("chromium is not installed (apt-get install chromium)");
    false
}

/// The text of the element with `id` in a dumped DOM (the first tag's content).
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find("</").unwrap();
    &rest[open..open + close]
}

async fn live_gateway(config: &str, env: &[(&str, &str)]) -> Gateway {
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let gw = Gateway::start_with_env(config, &[("rule.rhai", RULE)], env).await;
    let till = gw.till();
    for n in 1..=3 {
        till.call_json("addSessionLine", &body(n, 1)).await;
    }
    for counter in 2..=3 {
        till.call_json("addSessionLine", &body(1, counter)).await;
    }
    gw
}

#[tokio::test]
async fn the_console_shows_live_conversations_the_generation_and_call_rates() {
    if !have_chromium() {
        return;
    }
    let gw = live_gateway(LIVE, &[]).await;
    let dom = dump_dom(gw.admin_url("/")).await;
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page's refresh ran:\n{dom}"
    );
    assert_eq!(element(&dom, "generation"), "generation 1");
    assert_eq!(element(&dom, "conv-count"), "(3)");
    let table = element_block(&dom, "conversations");
    assert_eq!(table.matches("<tr").count(), 3, "{table}");
    assert_eq!(table.matches("addSessionLine").count(), 3, "{table}");
    assert_eq!(table.matches(">going on<").count(), 2, "{table}");
    // The status and the last decision of the finished one.
    assert_eq!(table.matches(">finished<").count(), 2, "{table}");
    assert_eq!(table.matches(">keep_polling<").count(), 2, "{table}");
    assert_eq!(table.matches("<td class=\"till\">3/2</td>").count(), 3);
    assert_eq!(table.matches(">ID check</td>").count(), 2, "{table}");
    assert_eq!(table.matches(">ok</td>").count(), 1, "{table}");
    let deliveries = element_block(&dom, "deliveries");
    assert!(
        deliveries.contains("no pending or dead deliveries"),
        "{deliveries}"
    );
    let rates = element_block(&dom, "rates");
    for (outcome, total) in [("finished", 1), ("keep_polling", 4)] {
        let row = format!("<td>addSessionLine</td><td>{outcome}</td>");
        let at = rates
            .find(&row)
            .unwrap_or_else(|| panic!("{row} in {rates}"));
        let rest = &rates[at + row.len()..];
        assert!(
            rest.split("</tr>")
                .next()
                .unwrap()
                .ends_with(&format!("<td>{total}</td>")),
            "{rates}"
        );
    }
    assert!(dom.contains("<div>no reload since start</div>"), "{dom}");
    assert!(!dom.contains(SECRET));

    // A conversation's detail, opened by its key (a click does the same).
    let r = client().get(gw.admin_url("/conversations")).send().await;
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&r.unwrap().bytes().await.unwrap()).unwrap();
    let done = list.iter().find(|c| c["finished"] == true).unwrap();
    let key = done["key"].as_str().unwrap();
    let dom = dump_dom(gw.admin_url(&format!("/#key={key}"))).await;
    assert_eq!(element(&dom, "detail-key"), key);
    let detail = element(&dom, "detail-json");
    assert!(detail.contains("\"attempts\": 3"), "{detail}");
    assert!(detail.contains("\"finished\": true"), "{detail}");
    assert!(detail.contains("\"message\": \"ok\""), "{detail}");
    assert!(detail.contains("\"till\": {"), "{detail}");
}

/// Everything inside the element with `id` up to its own closing tag (tables nest).
fn element_block<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap();
    let rest = &dom[start..];
    let end = rest.find("</tbody>").unwrap_or(rest.len());
    &rest[..end]
}

#[tokio::test]
async fn with_admin_token_the_page_loads_asks_for_the_token_and_then_shows_the_data() {
    if !have_chromium() {
        return;
    }
    let config = format!("admin:\n  token: ${{TOKEN}}\n{LIVE}");
    let gw = live_gateway(&config, &[("TOKEN", "console-token")]).await;
    let page = client().get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page itself needs no token");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");

    let asking = dump_dom(gw.admin_url("/")).await;
    assert!(
        asking.contains("<section id=\"login\" class=\"\">"),
        "{asking}"
    );
    assert!(
        asking.contains("<main id=\"console\" class=\"hidden\">"),
        "{asking}"
    );

    let wrong = dump_dom(gw.admin_url("/#token=not-it")).await;
    assert!(
        wrong.contains("<section id=\"login\" class=\"\">"),
        "{wrong}"
    );

    let open = dump_dom(gw.admin_url("/#token=console-token")).await;
    assert!(
        open.contains("<section id=\"login\" class=\"hidden\">"),
        "{open}"
    );
    assert_eq!(element(&open, "conv-count"), "(3)");
    assert!(
        !open.contains("console-token"),
        "the token is not left in the page"
    );
}
