//! The files a config generation is built from, and their bytes.
//!
//! The watcher reloads only when one of these changes (GATEWAY.md 6): the config file, the
//! rule files it names, and any `.rhai` file in the folder (a rule the config is about to
//! name, or one a failed reload could not read). Everything else in the folder, such as a
//! log file that `serve > serve.log` writes there, is ignored. A change that leaves every
//! input byte for byte as it was is no reload at all.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{Answer, Config};

/// The input files of one generation, with paths made comparable to watcher event paths.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Each input as given in the config (read for the fingerprint).
    files: Vec<PathBuf>,
    /// The same, normalised (canonical folder + file name).
    normalised: HashSet<PathBuf>,
    /// Their file names, for layouts where the watched path differs from the named one
    /// (Kubernetes config maps keep the real files in a `..data` folder behind symlinks).
    names: HashSet<OsString>,
}

/// The bytes of every input at one moment; `None` for a file that could not be read.
pub type Fingerprint = Vec<(PathBuf, Option<Vec<u8>>)>;

impl Inputs {
    /// The config file and every file it names.
    pub fn of(config: &Config) -> Self {
        let mut files = vec![config.path.clone()];
        for event in config.events.values() {
            if let Answer::Rule { path, .. } = &event.answer {
                files.push(path.clone());
            }
        }
        if let Some(tls) = &config.server.tls {
            files.push(tls.cert.clone());
            files.push(tls.key.clone());
        }
        files.sort();
        files.dedup();
        Self::from_files(files)
    }

    fn from_files(files: Vec<PathBuf>) -> Self {
        let normalised = files.iter().map(|f| normalise(f)).collect();
        let names = files
            .iter()
            .filter_map(|f| f.file_name().map(OsString::from))
            .collect();
        Self {
            files,
            normalised,
            names,
        }
    }

    /// Whether a change at `path` (as the watcher reports it) can change the config.
    pub fn is_input(&self, path: &Path) -> bool {
        if path.extension().is_some_and(|x| x == "rhai") {
            return true;
        }
        if path.file_name().is_some_and(|n| self.names.contains(n)) {
            return true;
        }
        // A swapped symlink (`..data` in a config map) changes every file behind it.
        if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            return true;
        }
        self.normalised.contains(&normalise(path))
    }

    /// Reads every input now.
    pub fn fingerprint(&self) -> Fingerprint {
        self.files
            .iter()
            .map(|f| (f.clone(), std::fs::read(f).ok()))
            .collect()
    }
}

/// `path` with its folder made canonical, so `./rules/x.rhai`, `rules/x.rhai` and the
/// watcher's absolute path compare equal (the file itself may be gone: editors replace it).
fn normalise(path: &Path) -> PathBuf {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (folder.canonicalize(), path.file_name()) {
        (Ok(folder), Some(name)) => folder.join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        std::fs::write(dir.join("rule.rhai"), "finish()").unwrap();
        std::fs::write(
            dir.join("pollgate.yaml"),
            "subscriptions:\n  shop:\n    secret: c2VjcmV0\nevents:\n  scanCode:\n    rule: rule.rhai\n",
        )
        .unwrap();
        Config::load(dir.join("pollgate.yaml"), &|_: &str| None).unwrap()
    }

    #[test]
    fn the_config_file_and_its_rules_are_inputs_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = Inputs::of(&config(dir.path()));
        let canonical = dir.path().canonicalize().unwrap();
        for input in ["pollgate.yaml", "rule.rhai", "new-rule.rhai"] {
            assert!(inputs.is_input(&canonical.join(input)), "{input}");
            assert!(inputs.is_input(&dir.path().join(input)), "{input}");
        }
        for other in [
            "serve.log",
            "notes.txt",
            ".rule.rhai.swp",
            "tests/cases.yaml",
            // The outbox (GATEWAY.md 8: its files never trigger a reload).
            "outbox.redb",
            "data/outbox/queue/0.jnl",
            "data/outbox/queue/keyspaces/1/tables/0",
        ] {
            assert!(!inputs.is_input(&canonical.join(other)), "{other}");
        }
    }

    #[test]
    fn a_fingerprint_changes_with_the_bytes_of_an_input_only() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = Inputs::of(&config(dir.path()));
        let before = inputs.fingerprint();
        std::fs::write(dir.path().join("serve.log"), "a line").unwrap();
        std::fs::write(dir.path().join("rule.rhai"), "finish()").unwrap();
        assert_eq!(inputs.fingerprint(), before);
        std::fs::write(dir.path().join("rule.rhai"), "finish(\"new\")").unwrap();
        assert_ne!(inputs.fingerprint(), before);
    }
}
