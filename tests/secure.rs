//! Encrypted wires and secret rotation (GATEWAY.md 10), on the real server:
//! `subscriptions.X.previous_secrets` and `server.tls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use pollgate::signature::{Encoding, Secret};

/// base64 of "new-rotation-secret"; the demo secret [`SECRET`] is the previous one.
const NEW_SECRET: &str = "bmV3LXJvdGF0aW9uLXNlY3JldA==";

fn rotating() -> String {
    format!(
        "subscriptions:\n  {SUBSCRIPTION}:\n    secret: {NEW_SECRET}\n    previous_secrets: [{SECRET}]\nevents:\n  \"*\":\n    respond: {{ok: true}}\n"
    )
}

fn till_with(gw: &Gateway, secret: &str, encoding: Encoding) -> Till {
    Till {
        secret: Secret::decode(secret, encoding).unwrap(),
        ..gw.till()
    }
}

#[tokio::test]
async fn each_answer_is_signed_with_the_secret_that_verified_its_call() {
    let gw = Gateway::start(&rotating(), &[]).await;
    let on_previous = till_with(&gw, SECRET, Encoding::Base64)
        .call("scanCode", &b"{\"a\":1}"[..])
        .await;
    assert_eq!(on_previous.status, 200);
    assert_eq!(&on_previous.body[..], br#"{"ok":true}"#);
    // HMAC-SHA256 of {"ok":true} with "demo-secret-for-pollgate-examples".
    assert_eq!(
        on_previous.signature.as_deref(),
        Some("fIfGs30AaPRqs5bM5tjXiEMY2dDMOKxzuWcPCUqepGA=")
    );
    let on_new = till_with(&gw, NEW_SECRET, Encoding::Base64)
        .call("scanCode", &b"{\"a\":2}"[..])
        .await;
    assert_eq!(on_new.status, 200);
    // The same body with "new-rotation-secret".
    assert_eq!(
        on_new.signature.as_deref(),
        Some("SUHfbg1BLE5W1rw51NsLxHSh29W2sQZLM/d7uU3vUKU=")
    );
}

#[tokio::test]
async fn a_call_signed_with_neither_secret_is_refused_signed_with_the_current_one() {
    let gw = Gateway::start(&rotating(), &[]).await;
    let r = till_with(&gw, "other-secret", Encoding::Utf8)
        .call("scanCode", &b"{\"a\":1}"[..])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        &r.body[..],
        br#"{"error":{"code":"INVALID_SIGNATURE","message":"X-Mplus-Signature does not match the body"}}"#
    );
    assert_eq!(
        r.signature.as_deref(),
        Some("zCFeMMqey4sQzIdSgZ7UpfHkYWxBfOVOaAN6vIU7vdg=")
    );
}

// ---- server.tls ----

const TLS: &str =
    "server:\n  tls: {cert: cert.pem, key: key.pem}\nevents:\n  \"*\":\n    respond: {ok: true}\n";

async fn tls_gateway(pki: &Pki) -> Gateway {
    Gateway::start(
        TLS,
        &[
            ("cert.pem", &pki.read("server.pem")),
            ("key.pem", &pki.read("server.key")),
        ],
    )
    .await
}

/// A client that trusts only the test CA, at most `max` TLS version.
fn https_client(pki: &Pki, max: reqwest::tls::Version) -> reqwest::Client {
    pollgate::upstream::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(pki.read("ca.pem").as_bytes()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .tls_version_max(max)
        .tls_info(true)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

fn https_till(gw: &Gateway, client: reqwest::Client) -> Till {
    Till {
        base: format!("https://{}/webhooks", gw.addr),
        client,
        ..gw.till()
    }
}

#[tokio::test]
async fn the_webhook_listener_speaks_tls_1_2_and_1_3_with_the_configured_certificate() {
    let pki = Pki::new();
    let gw = tls_gateway(&pki).await;
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let till = https_till(&gw, https_client(&pki, version));
        let answer = till.call("scanCode", &b"{\"a\":1}"[..]).await;
        assert_eq!(answer.status, 200, "{version:?}");
        assert_eq!(&answer.body[..], br#"{"ok":true}"#);
        assert!(answer.is_signed());
    }
    // Plain HTTP on the TLS port gets no answer.
    let plain = client().post(gw.url("scanCode")).body("{}").send().await;
    assert!(plain.is_err(), "{plain:?}");
}

async fn peer_certificate(gw: &Gateway, pki: &Pki) -> Vec<u8> {
    let r = https_client(pki, reqwest::tls::Version::TLS_1_3)
        .post(format!("https://{}/webhooks/scanCode", gw.addr))
        .send()
        .await
        .unwrap();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

#[tokio::test]
async fn a_reload_takes_a_new_pair_and_keeps_the_last_good_one_when_the_pair_is_bad() {
    let pki = Pki::new();
    pki.server("renewed");
    let gw = tls_gateway(&pki).await;
    assert_eq!(peer_certificate(&gw, &pki).await, pki.der("server.pem"));

    // The renewed certificate with the old key: refused, the old pair goes on.
    std::fs::write(gw.dir.path().join("cert.pem"), pki.read("renewed.pem")).unwrap();
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let (cert, key) = (
        gw.dir.path().join("cert.pem"),
        gw.dir.path().join("key.pem"),
    );
    assert_eq!(
        body["errors"],
        serde_json::json!([format!(
            "{}: server.tls: the private key in {} does not match the certificate in {}",
            gw.dir.path().join("pollgate.yaml").display(),
            key.display(),
            cert.display()
        )])
    );
    assert_eq!(peer_certificate(&gw, &pki).await, pki.der("server.pem"));

    // Its key too: the next connection gets the renewed certificate.
    std::fs::write(&key, pki.read("renewed.key")).unwrap();
    let r = client().post(gw.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_certificate(&gw, &pki).await, pki.der("renewed.pem"));
}

fn load_tls(dir: &std::path::Path, cert: &str, key: &str) -> String {
    let text = format!(
        "subscriptions:\n  shop:\n    secret: {SECRET}\nserver:\n  tls: {{cert: {cert}, key: {key}}}\nevents:\n  \"*\":\n    respond: {{}}\n"
    );
    let path = dir.join("pollgate.yaml");
    std::fs::write(&path, text).unwrap();
    pollgate::config::Config::load(&path, &|_| None)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_missing_cert_file_one_without_pem_and_a_key_of_another_cert_are_refused_exactly() {
    let pki = Pki::new();
    pki.server("other");
    let dir = pki.dir.path();
    let file = dir.join("pollgate.yaml");
    let (f, at) = (file.display(), |name: &str| {
        dir.join(name).display().to_string()
    });
    assert_eq!(
        load_tls(dir, "missing.pem", "server.key"),
        format!(
            "{f}: server.tls.cert: cannot read {}: No such file or directory (os error 2)",
            at("missing.pem")
        )
    );
    std::fs::write(dir.join("garbage.pem"), "this is not PEM\n").unwrap();
    assert_eq!(
        load_tls(dir, "garbage.pem", "server.key"),
        format!(
            "{f}: server.tls.cert: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            at("garbage.pem")
        )
    );
    assert_eq!(
        load_tls(dir, "server.pem", "garbage.pem"),
        format!(
            "{f}: server.tls.key: {} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            at("garbage.pem")
        )
    );
    assert_eq!(
        load_tls(dir, "server.pem", "missing.key"),
        format!(
            "{f}: server.tls.key: cannot read {}: No such file or directory (os error 2)",
            at("missing.key")
        )
    );
    assert_eq!(
        load_tls(dir, "server.pem", "other.key"),
        format!(
            "{f}: server.tls: the private key in {} does not match the certificate in {}",
            at("other.key"),
            at("server.pem")
        )
    );
}

fn simulate(url: &str, ca: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .args([
            "simulate", "--url", url, "--event", "scanCode", "--secret", SECRET,
        ])
        .args(["--subscription", SUBSCRIPTION, "--max-polls", "1", "--ca"])
        .arg(ca)
        .output()
        .unwrap()
}

#[tokio::test]
async fn simulate_trusts_the_ca_given_with_ca_and_says_exactly_what_is_wrong_with_one() {
    let pki = Pki::new();
    let gw = tls_gateway(&pki).await;
    let url = format!("https://{}/webhooks", gw.addr);
    let ca = pki.path("ca.pem");
    let run = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || simulate(&url, &ca))
    };
    let out = run.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("finished after 1 call"), "{stdout}");

    let missing = pki.path("nope.pem");
    let out = simulate(&url, &missing);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "pollgate simulate: cannot read --ca {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    let key = pki.path("server.key");
    let out = simulate(&url, &key);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "pollgate simulate: --ca {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)\n",
            key.display()
        )
    );
}
