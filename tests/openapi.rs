//! The admin listener's OpenAPI document (`src/http/admin/openapi.json`, served at
//! `GET /openapi.json`) kept true against the real server: it names every route the router
//! answers and no other, each with the tokens that open it, its references resolve, and
//! schemathesis (PyPI) finds every answer as the document says (status, headers, content
//! type, body schema, 405s with `Allow`, 401s without a token).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{body, client, closed_port, complete_session, eventually, Gateway, MockReply};
use common::{skip_outside_ci, MockUpstream, SUBSCRIPTION};
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "openapi-admin-token";
const PUSH_TOKEN: &str = "openapi-push-token";

/// Every (method, path template) the admin router answers, in an order that lets each run
/// against real data (deletes last).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/openapi.json"),
    ("GET", "/status"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/conversations"),
    ("GET", "/conversations/{key}"),
    ("POST", "/reload"),
    ("GET", "/deliveries"),
    ("POST", "/deliveries/retry"),
    ("POST", "/deliveries/{id}/retry"),
    ("DELETE", "/deliveries/{id}"),
    ("POST", "/push/{subscription}/{branch}/{workplace}"),
    ("GET", "/push/{subscription}/{branch}/{workplace}"),
    ("GET", "/push"),
    ("DELETE", "/push/{subscription}/{branch}/{workplace}/{id}"),
];

/// Paths that need no token.
const OPEN: &[&str] = &["/", "/openapi.json", "/healthz", "/readyz"];

/// The methods the router is asked for on every documented path (HEAD and OPTIONS are left
/// to HTTP itself, as schemathesis leaves them).
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Real data for every templated path: a dead delivery (`erp` answers 422), a pending one
/// (`crm` refuses connections), a conversation with a forward that is done, a pushed message.
struct Seeded {
    gw: Gateway,
    _erp: MockUpstream,
    key: String,
    dead: String,
    pending: String,
    message: String,
}

async fn seeded() -> Seeded {
    let erp = MockUpstream::start(|_| MockReply::json(422, json!({"refused": true}))).await;
    let crm = closed_port().await;
    let config = format!(
        "admin:\n  token: {ADMIN_TOKEN}\n  push_token: {PUSH_TOKEN}\n\
         outbox:\n  path: outbox\n\
         upstreams:\n\
         \x20 erp:\n    url: {}\n    timeout: 2s\n    durable: {{max_age: 1h, backoff: {{min: 1h, max: 1h}}}}\n\
         \x20 crm:\n    url: http://{crm}\n    timeout: 1s\n    durable: {{max_age: 1h, backoff: {{min: 1h, max: 1h}}}}\n\
         events:\n\
         \x20 completeSession:\n    forward: erp\n    delivery: durable\n\
         \x20 addSessionLine:\n    forward: crm\n    delivery: durable\n\
         \x20 scanCode:\n    forward: erp\n\
         \x20 backgroundPoll:\n    push: {{hold: 1s, ttl: 10m}}\n",
        erp.url()
    );
    let gw = Gateway::start(&config, &[]).await;
    let till = gw.till();
    assert_eq!(
        till.call_json("completeSession", &complete_session(1))
            .await
            .status,
        200
    );
    assert_eq!(
        till.call_json("addSessionLine", &body(2, 1)).await.status,
        200
    );
    assert_eq!(till.call_json("scanCode", &body(3, 1)).await.status, 200);
    let deliveries = |status: &'static str| {
        let gw = &gw;
        async move {
            let list = get(gw, &format!("/deliveries?status={status}")).await;
            list.as_array()?.first()?["id"].as_str().map(str::to_owned)
        }
    };
    let dead = eventually("a dead delivery", || deliveries("dead")).await;
    let pending = eventually("a pending delivery", || deliveries("pending")).await;
    let pushed = client()
        .post(gw.admin_url(&format!("/push/{SUBSCRIPTION}/3/2")))
        .bearer_auth(ADMIN_TOKEN)
        .body(json!({"externalCardScan": {"cardNumber": "6012-0001", "balance": 25.0}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 202);
    let message = json_of(pushed).await["id"].as_str().unwrap().to_owned();
    let conversations = get(&gw, "/conversations?event=scanCode").await;
    let key = conversations[0]["key"].as_str().unwrap().to_owned();
    Seeded {
        gw,
        _erp: erp,
        key,
        dead,
        pending,
        message,
    }
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    json_of(r).await
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/admin/openapi.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every (method, path) the document has.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// Every `$ref` in `value` points at something in `doc`.
fn check_refs(doc: &Value, value: &Value, at: &str) {
    match value {
        Value::Object(map) => {
            if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                let pointer = target.strip_prefix('#').unwrap_or(target);
                assert!(
                    doc.pointer(pointer).is_some(),
                    "{at}: $ref {target} points at nothing"
                );
            }
            for (name, inner) in map {
                check_refs(doc, inner, &format!("{at}/{name}"));
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                check_refs(doc, inner, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

/// `value`, or what its `$ref` points at.
fn resolved<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(target) => doc.pointer(&target[1..]).unwrap(),
        None => value,
    }
}

/// The names of the path parameters declared for one operation (path-level and its own).
fn path_parameters(doc: &Value, path: &str, method: &str) -> BTreeSet<String> {
    let item = &doc["paths"][path];
    let lists = [
        &item["parameters"],
        &item[method.to_lowercase()]["parameters"],
    ];
    let mut names = BTreeSet::new();
    for list in lists.into_iter().filter_map(Value::as_array) {
        for p in list.iter().map(|p| resolved(doc, p)) {
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{method} {path}: {p}");
                names.insert(p["name"].as_str().unwrap().to_owned());
            }
        }
    }
    names
}

fn template_names(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// The document's own checks: JSON, OpenAPI 3.1 of this version, every reference resolving,
/// every path template's parameters declared, every operation with answers.
fn check_document(doc: &Value) {
    let openapi = doc["openapi"].as_str().unwrap_or_default();
    assert!(openapi.starts_with("3.1."), "openapi: {openapi}");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["info"]["title"].is_string());
    check_refs(doc, doc, "#");
    for (method, path) in operations(doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert_eq!(
            path_parameters(doc, &path, &method),
            template_names(&path),
            "{method} {path}: path parameters"
        );
        let answers = op["responses"].as_object().unwrap();
        assert!(
            answers.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success answer"
        );
        // The origin check comes before everything, on every path; the token check before
        // every closed one.
        assert!(answers.contains_key("403"), "{method} {path}: no 403");
        let open = op["security"] == json!([]);
        assert_eq!(answers.contains_key("401"), !open, "{method} {path}: 401");
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
}

/// The concrete path (and query) for a route, with the seeded data.
fn concrete(s: &Seeded, method: &str, template: &str) -> String {
    let message = s.message.as_str();
    let id = match (method, template) {
        ("POST", "/deliveries/{id}/retry") => s.dead.as_str(),
        ("DELETE", "/deliveries/{id}") => s.pending.as_str(),
        _ => message,
    };
    let path = template
        .replace("{key}", &s.key)
        .replace("{subscription}", SUBSCRIPTION)
        .replace("{branch}", "3")
        .replace("{workplace}", "2")
        .replace("{id}", id);
    match path.as_str() {
        "/deliveries/retry" => "/deliveries/retry?upstream=erp".to_owned(),
        _ => path,
    }
}

async fn send(gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client().request(method.clone(), gw.admin_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method == Method::POST && path.starts_with("/push/") {
        request = request.body(json!({"note": {"text": "from the route test"}}).to_string());
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_every_route_the_admin_listener_answers_and_no_other() {
    let doc = document();
    check_document(&doc);
    let s = seeded().await;
    let gw = &s.gw;

    let served = client()
        .get(gw.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200, "open without a token");
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(json_of(served).await, doc, "the file, as built in");
    let foreign = client()
        .get(gw.admin_url("/openapi.json"))
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "a page of another site");
    assert_eq!(json_of(foreign).await["error"]["code"], "CROSS_ORIGIN");

    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations(&doc), listed, "the document against ROUTES");

    for &(method, template) in ROUTES {
        let path = concrete(&s, method, template);
        let op = &doc["paths"][template][method.to_lowercase()];
        let security = op.get("security").unwrap_or(&doc["security"]);
        let schemes: Vec<&str> = security
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
            .collect();
        let push = template.starts_with("/push");
        assert_eq!(
            schemes.is_empty(),
            OPEN.contains(&template),
            "{method} {template}"
        );
        assert_eq!(schemes.contains(&"pushToken"), push, "{method} {template}");

        let bare = send(gw, method, &path, None).await;
        if schemes.is_empty() {
            assert!(
                bare.status().is_success(),
                "{method} {path}: {}",
                bare.status()
            );
        } else {
            assert_eq!(bare.status(), 401, "{method} {path} without a token");
            assert_eq!(bare.headers()["www-authenticate"], "Bearer");
            if !push {
                let scoped = send(gw, method, &path, Some(PUSH_TOKEN)).await;
                assert_eq!(scoped.status(), 401, "{method} {path} with the push token");
            }
        }
        let token = if push { PUSH_TOKEN } else { ADMIN_TOKEN };
        let r = send(gw, method, &path, Some(token)).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {template}: {status} is not in the document"
        );
    }

    // Every other method on a documented path is 405, its Allow naming the document's.
    let mut methods: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for &(method, template) in ROUTES {
        methods.entry(template).or_default().insert(method);
    }
    for (template, allowed) in &methods {
        // The one delivery left after the route loop's delete.
        let path = concrete(&s, "POST", template);
        for &method in METHODS.iter().filter(|m| !allowed.contains(*m)) {
            let r = send(gw, method, &path, Some(ADMIN_TOKEN)).await;
            assert_eq!(r.status(), 405, "{method} {path}");
            let allow: BTreeSet<&str> =
                r.headers()["allow"].to_str().unwrap().split(", ").collect();
            assert_eq!(&allow, allowed, "Allow of {method} {path}");
        }
    }

    // Paths next to the documented ones are not answered.
    for path in [
        "/nope",
        "/openapi",
        "/openapi.yaml",
        "/status/",
        "/reload/now",
        "/metrics/x",
        "/deliveries/x/y",
        "/deliveries/x/retry/y",
        "/push/shop/3",
        "/push/shop/3/2/x/y",
    ] {
        for method in ["GET", "POST", "DELETE"] {
            let r = send(gw, method, path, Some(ADMIN_TOKEN)).await;
            assert_eq!(r.status(), 404, "{method} {path}");
        }
    }
}

/// The `schemathesis` command, when it runs here.
fn schemathesis_version() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// At most this many test cases per operation and phase; the run takes about 30 s.
const MAX_EXAMPLES: &str = "100";
/// The wall-clock bound of the whole run: past it, schemathesis is killed and the test fails.
const RUN_BOUND: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_as_the_document_says() {
    let Some(version) = schemathesis_version() else {
        skip_outside_ci("no schemathesis here (python3 -m pip install schemathesis==4.32.5)");
        return;
    };
    let s = seeded().await;
    let dir = s.gw.dir.path();
    // Values the document cannot know: the config's names, given as they are (any other
    // upstream or subscription is rightly refused, and schemathesis's coverage phase tries
    // boundary values even of a parameter bound to a dictionary), and real ids half the time
    // so the operations on one resource reach it.
    let config = format!(
        "[dictionaries]\n\
         keys = {{ values = [\"{}\"] }}\n\
         ids = {{ values = [\"{}\", \"{}\", \"{}\"] }}\n\
         \n[parameters]\n\
         \"query.upstream\" = \"erp\"\n\
         \"path.subscription\" = \"{SUBSCRIPTION}\"\n\
         \"path.key\" = {{ dictionary = \"keys\", probability = 0.5 }}\n\
         \"path.id\" = {{ dictionary = \"ids\", probability = 0.5 }}\n",
        s.key, s.dead, s.pending, s.message
    );
    std::fs::write(dir.join("schemathesis.toml"), config).unwrap();
    let log = dir.join("schemathesis.log");
    let mut command = Command::new("schemathesis");
    command
        .current_dir(dir)
        .args(["--config-file", "schemathesis.toml", "--no-color", "run"])
        .arg(s.gw.admin_url("/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        // One worker: on Python 3.11, hypothesis's ast.parse in two threads at once now and
        // then dies of CPython's "AST constructor recursion depth mismatch" (gh-106905).
        .args(["--workers", "1", "--request-timeout", "10"]);
    let file = std::fs::File::create(&log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {RUN_BOUND:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{version}: {status}\n{output}");
    let summary = output
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("no summary line")
        .trim();
    assert!(
        !summary.contains(" 0 generated") && summary.contains("passed"),
        "{output}"
    );
    let links = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("API Links:"))
        .unwrap_or("none")
        .trim();
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{version}: {summary}; API links {links}");
}
