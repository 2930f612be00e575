//! The operator's console (GATEWAY.md 10) driven like an operator drives it: Debian's
//! chromium through chromedriver over WebDriver (tests/common/webdriver.rs), against a real
//! gateway with an admin token, live conversations at several tills, a pending delivery and
//! a dead one (its back end answered 422), and messages pushed to two tills. The test types
//! the token, reads what the page shows, opens a conversation, clicks Retry on the dead
//! delivery and Withdraw on a pushed message, and checks through the admin API that the
//! delivery was sent again and the message is gone. `.ci/run` installs chromium and chromium-driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::webdriver::{have_browser, Browser};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "console-token";

const RULE: &str = r#"
if poll.attempt < 3 { keep_polling("ID check", "One moment") } else { finish("Thank you") }
"#;

fn config(erp: &str, stock: &str) -> String {
    format!(
        "admin:\n  token: ${{TOKEN}}\n\
         outbox:\n  path: outbox\n\
         upstreams:\n\
         \x20 erp:\n    url: {erp}\n    timeout: 2s\n    durable: {{max_age: 1h, backoff: {{min: 20ms, max: 50ms}}, lease: 5s}}\n\
         \x20 stock:\n    url: {stock}\n    timeout: 2s\n    durable: {{max_age: 1h, backoff: {{min: 10m, max: 20m}}, lease: 5s}}\n\
         events:\n\
         \x20 addSessionLine:\n    rule: rule.rhai\n    polling: {{}}\n\
         \x20 completeSession:\n    forward: erp\n    delivery: durable\n\
         \x20 creditSession:\n    forward: stock\n    delivery: durable\n\
         \x20 backgroundPoll:\n    push: {{hold: 10s, ttl: 10m}}\n"
    )
}

/// A call of conversation `n` from till `branch`/`workplace`.
fn at_till(mut body: Value, branch: u32, workplace: u32) -> Value {
    body["sender"]["branchNumber"] = json!(branch);
    body["sender"]["workplaceNumber"] = json!(workplace);
    body
}

fn session_end(event: &str, n: u32) -> Value {
    json!({
        "event": {"eventBlocking": true, "eventCounter": 1, "eventTimestamp": format!("2026-03-02T10:00:{n:02}.000+01:00")},
        "sender": {"branchNumber": 12, "workplaceNumber": 3},
        "session": {"sessionId": format!("00000000-0000-4000-8000-{n:012}"), "total": 12.5},
        event: {"receiptNumber": n}
    })
}

async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.admin_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// The width and height a PNG's header gives.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_enters_the_token_reads_the_tills_and_retries_a_dead_delivery() {
    if !have_browser() {
        return;
    }
    let erp = MockUpstream::start(MockReply::unprocessable_once).await;
    let stock = MockUpstream::start(|_| MockReply::json(503, json!({}))).await;
    let env = [("TOKEN".to_owned(), TOKEN.to_owned())].into();
    let gw = Gateway::start_with_env(
        &config(&erp.url(), &stock.url()),
        &[("rule.rhai", RULE)],
        env,
    )
    .await;
    let till = gw.till();
    for (n, branch, workplace, calls) in [(1, 12, 3, 1), (2, 12, 4, 2), (3, 7, 1, 3)] {
        for counter in 1..=calls {
            let b = at_till(body(n, counter), branch, workplace);
            till.call_json("addSessionLine", &b).await;
        }
    }
    till.call_json("completeSession", &session_end("completeSession", 1))
        .await;
    till.call_json("creditSession", &session_end("creditSession", 2))
        .await;
    let dead = eventually("a dead delivery", || async {
        admin_get(&gw, "/deliveries?status=dead")
            .await
            .as_array()?
            .first()
            .cloned()
    })
    .await;
    let id = dead["id"].as_str().unwrap().to_owned();
    eventually("a pending delivery that failed once", || async {
        let pending = admin_get(&gw, "/deliveries?status=pending").await;
        (pending[0]["last_error"] == "answered 503").then_some(())
    })
    .await;
    let mut pushed = Vec::new();
    for (path, card) in [("shop/12/3", "6012-1"), ("shop/7/1", "6012-2")] {
        let r = client()
            .post(gw.admin_url(&format!("/push/{path}")))
            .bearer_auth(TOKEN)
            .body(json!({"externalCardScan": {"cardNumber": card}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        pushed.push(answer["id"].as_str().unwrap().to_owned());
    }
    let listed = admin_get(&gw, "/conversations?till=12/3&event=addSessionLine").await;
    let key = listed[0]["key"].as_str().unwrap().to_owned();

    let browser = Browser::start(1400, 1000).await;
    browser.goto(&gw.admin_url("/")).await;
    // The page loads without the token, finds its data requests refused and asks.
    let token = browser.find("#token").await;
    eventually("the token prompt", || async {
        browser.displayed(&token).await.then_some(())
    })
    .await;
    assert!(!browser.displayed(&browser.find("#console").await).await);
    browser.type_text(&token, TOKEN).await;
    browser
        .click(&browser.find("#login-form button").await)
        .await;
    eventually("the data", || async {
        (browser.execute("return document.body.dataset.loaded").await == "yes").then_some(())
    })
    .await;
    assert!(!browser.displayed(&browser.find("#login").await).await);

    // The tills, each conversation's last decision and message.
    let rows = browser.find_all("#conversations tr[data-key]").await;
    assert_eq!(
        rows.len(),
        5,
        "three addSessionLine, completeSession, creditSession"
    );
    assert_eq!(
        browser.text(&browser.find("#conv-count").await).await,
        "(5)"
    );
    let row = format!("#conversations tr[data-key=\"{key}\"]");
    let cell = |class: &str| format!("{row} td.{class}");
    assert_eq!(
        browser.text(&browser.find(&cell("till")).await).await,
        "12/3"
    );
    assert_eq!(
        browser.text(&browser.find(&cell("message")).await).await,
        "ID check · One moment"
    );
    assert_eq!(
        row_texts(&browser, &key).await,
        [
            "addSessionLine",
            "12/3",
            "1",
            "going on",
            "keep_polling",
            "ID check · One moment"
        ]
    );
    let other = admin_get(&gw, "/conversations?till=7/1").await;
    assert_eq!(
        row_texts(&browser, other[0]["key"].as_str().unwrap()).await,
        [
            "addSessionLine",
            "7/1",
            "3",
            "finished",
            "finished",
            "Thank you"
        ]
    );

    // A click on a conversation opens its detail.
    browser.click(&browser.find(&row).await).await;
    let detail_key = browser.find("#detail-key").await;
    eventually("the detail", || async {
        (browser.text(&detail_key).await == key).then_some(())
    })
    .await;
    let detail = browser.text(&browser.find("#detail-json").await).await;
    assert!(detail.contains("\"subscription\": \"shop\""), "{detail}");

    // Deliveries: the pending one without a button, the dead one with Retry.
    let dead_row = format!("#deliveries tr[data-id=\"{id}\"]");
    assert_eq!(
        browser
            .attribute(&browser.find(&dead_row).await, "data-status")
            .await
            .as_deref(),
        Some("dead")
    );
    let pending = browser
        .find_all("#deliveries tr[data-status=\"pending\"]")
        .await;
    assert_eq!(pending.len(), 1);
    assert!(browser
        .find_all("#deliveries tr[data-status=\"pending\"] button")
        .await
        .is_empty());
    let dead_text = browser.text(&browser.find(&dead_row).await).await;
    for shown in ["dead", "erp", "completeSession", "answered 422", "Retry"] {
        assert!(dead_text.contains(shown), "{shown} in {dead_text}");
    }

    // Pushed messages: each with its till and body, and a Withdraw button.
    assert_eq!(
        browser.text(&browser.find("#push-count").await).await,
        "(2)"
    );
    let push_row = |id: &str| format!("#pushed tr[data-id=\"{id}\"]");
    let first = browser
        .text(&browser.find(&push_row(&pushed[0])).await)
        .await;
    for shown in [
        "shop",
        "12/3",
        r#"{"externalCardScan":{"cardNumber":"6012-1"}}"#,
        "Withdraw",
    ] {
        assert!(first.contains(shown), "{shown} in {first}");
    }
    // Ten minutes to live (ttl: 10m), counted down whole minutes.
    assert!(first.contains(" in 9 min "), "{first}");
    assert!(browser
        .text(&browser.find(&push_row(&pushed[1])).await)
        .await
        .contains("7/1"));

    let png = browser.screenshot().await;
    // The viewport: the window less headless chromium's own frame.
    let (width, height) = png_size(&png);
    assert_eq!(width, 1400);
    assert!((700..=1000).contains(&height), "{height}");
    if let Some(path) = std::env::var_os("POLLGATE_CONSOLE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }

    // Retry: the button sends the token, the page says what happened, the back end gets
    // the delivery again with the same Idempotency-Key, and nothing is dead any more.
    let retry = browser.find(&format!("{dead_row} button.retry")).await;
    assert_eq!(browser.text(&retry).await, "Retry");
    browser.click(&retry).await;
    let note = browser.find("#delivery-note").await;
    let said = format!("delivery {id} to erp: pending");
    eventually("the retry's note", || async {
        (browser.text(&note).await == said).then_some(())
    })
    .await;
    eventually("sent again", || async { (erp.count() == 2).then_some(()) }).await;
    let sent = erp.requests();
    assert_eq!(
        sent[1].headers["idempotency-key"],
        sent[0].headers["idempotency-key"]
    );
    assert_eq!(
        sent[0].headers["idempotency-key"].to_str().unwrap(),
        dead["key"]
    );
    eventually("delivered, so neither dead nor pending", || async {
        let erp_left = admin_get(&gw, "/deliveries?upstream=erp").await;
        erp_left.as_array()?.is_empty().then_some(())
    })
    .await;
    eventually("the dead row gone from the page", || async {
        browser.find_all(&dead_row).await.is_empty().then_some(())
    })
    .await;

    // Withdraw: the message is gone from the till's mailbox and from the page.
    let withdraw = browser
        .find(&format!("{} button.withdraw", push_row(&pushed[0])))
        .await;
    browser.click(&withdraw).await;
    let note = browser.find("#push-note").await;
    let said = format!("message {} to 12/3: withdrawn", pushed[0]);
    eventually("the withdrawal's note", || async {
        (browser.text(&note).await == said).then_some(())
    })
    .await;
    let left = admin_get(&gw, "/push").await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], pushed[1]);
    assert!(admin_get(&gw, "/push/shop/12/3").await == json!([]));
    eventually("the withdrawn row gone from the page", || async {
        browser
            .find_all(&push_row(&pushed[0]))
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // The till filter: a bad value is refused with the gateway's own words, a good one
    // keeps that till's conversations.
    let filter = browser.find("#filter-till").await;
    browser.type_text(&filter, "12/x").await;
    browser
        .click(&browser.find("#filter-form button").await)
        .await;
    let problem = browser.find("#problem").await;
    let refused = "/conversations: till: `12/x` is not BRANCH/WORKPLACE or BRANCH (whole numbers, e.g. till=12/3)";
    eventually("the refusal", || async {
        (browser.text(&problem).await == refused).then_some(())
    })
    .await;
    browser
        .execute("document.getElementById('filter-till').value = ''")
        .await;
    browser.type_text(&filter, "12/3").await;
    browser
        .click(&browser.find("#filter-form button").await)
        .await;
    eventually("the till's three conversations", || async {
        let count = browser.text(&browser.find("#conv-count").await).await;
        (count == "(3)" && browser.text(&problem).await.is_empty()).then_some(())
    })
    .await;
    for row in browser.find_all("#conversations td.till").await {
        assert_eq!(browser.text(&row).await, "12/3");
    }
}

/// The first cells of the page's row for conversation `key`, without the age (it moves).
async fn row_texts(browser: &Browser, key: &str) -> Vec<String> {
    let tds = browser
        .find_all(&format!("#conversations tr[data-key=\"{key}\"] td"))
        .await;
    let mut texts = Vec::new();
    for (i, td) in tds.iter().enumerate().take(7) {
        if i != 3 {
            texts.push(browser.text(td).await);
        }
    }
    texts
}
