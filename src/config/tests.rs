//! Config validation: every problem names the file and the key.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_owned())
}

#[test]
fn the_shipped_example_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/pollgate.yaml");
    let config = Config::load(path, &|_| None).expect("rules/pollgate.yaml loads");
    assert!(config.events.contains_key("*"));
    assert!(config.subscriptions["example_subscription"].is_demo);
}
