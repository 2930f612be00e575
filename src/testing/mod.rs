//! `pollgate test`: rule test cases (GATEWAY.md 4.5) run through the real pipeline, with
//! a memory store, pretend upstream replies and tokio's paused clock, so `after: 30s` and
//! a reply `delay` take no real time and no network is used.
//!
//! A test file:
//!
//! ```yaml
//! config: ../pollgate.yaml          # optional; default: the --config file
//! cases:
//!   - name: loyalty card is recognized
//!     event: scanCode
//!     subscription: example_subscription  # optional; default: the first one
//!     body_file: bodies/scanCode.json     # or `body:` inline
//!     upstreams:                          # pretend replies, by upstream name
//!       loyalty: {status: 200, body: {points: 10}, delay: 2s}
//!     forwards: {loyalty: 1}              # optional: forwards sent, by upstream
//!     calls:
//!       - expect: {scanCode: {recognized: true}}
//!       - after: 3s                       # time that passes before this call
//!         status: 200
//!         expect: {polling: {finished: true}}
//! ```
//!
//! `expect` matches when every key it names has the given value in the answer (maps are
//! compared key by key, arrays element by element, numbers by value); `null` expects the
//! key to be absent (or null). Extra keys in the answer are fine, except:
//!
//! - `exact: true` on a call: the answer has exactly the keys `expect` names, at every
//!   level, and no others (`null` still expects a key to be absent or null);
//! - an empty map `{}` expects an empty object, wherever it appears (as a subset it would
//!   match any object, so `expect: {}` means the answer is exactly `{}`);
//! - `same_as: N` on a call: its status and body equal call N's (an earlier call of the
//!   case, counted from 1) byte for byte, e.g. a repeated call replaying its answer.
//!
//! ```yaml
//!     calls:
//!       - expect: {scanCode: {recognized: false}}
//!         exact: true                     # and nothing else in the answer
//!       - same_as: 1                      # the same bytes as call 1
//! ```
//!
//! The config a file's cases run against: the file's `config:`, else `--config` (or
//! `$POLLGATE_CONFIG`), else `rules/pollgate.yaml` if it exists, else a `pollgate.yaml`
//! beside the test file, else one in the test file's parent folder, so `pollgate test
//! tests/x.yaml` works inside the rules folder too.

mod case;
mod expect;
mod file;
mod find;
mod pretend;

use std::path::{Path, PathBuf};

use crate::config::Problem;
use case::run_file;
use find::test_files;

/// The outcome of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    /// Failed cases, and test files that could not be run (each counts once).
    pub failed: usize,
    /// Of `failed`: test files that could not be read.
    pub broken_files: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        match self.broken_files {
            0 => Ok(()),
            1 => write!(f, " (1 test file could not be run)"),
            n => write!(f, " ({n} test files could not be run)"),
        }
    }
}

/// Runs the test files at `paths` (files or folders; none: the `tests` folder beside the
/// config) against `config` (`None`: not given, looked up; see the module's docs). Prints
/// a line per case to `out` and a problem with a file to `err`, once, counting the file as
/// failed; `Err` when there is nothing to run. `env` expands the config's `${VAR}`.
pub fn run(
    config: Option<&Path>,
    paths: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<Summary, Vec<Problem>> {
    let files = test_files(config, paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| {
            vec![Problem::in_file(
                &files[0],
                format!("cannot start the test runtime: {e}"),
            )]
        })?;
    let mut summary = Summary::default();
    for file in files {
        let _ = writeln!(out, "{}", file.display());
        match runtime.block_on(run_file(config, &file, env, out)) {
            Ok(s) => {
                summary.passed += s.passed;
                summary.failed += s.failed;
            }
            Err(problem) => {
                let _ = out.flush();
                let _ = writeln!(err, "{problem}");
                summary.failed += 1;
                summary.broken_files += 1;
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::{run, Summary};

    const CONFIG: &str = "subscriptions:\n  shop:\n    secret: ZGVtby1zZWNyZXQtZm9yLXBvbGxnYXRlLWV4YW1wbGVz\n\
        events:\n  scanCode:\n    rule: scan.rhai\n  addSessionLine:\n    rule: wait.rhai\n    polling: {}\n";

    /// Runs `cases` (a test file) against [`CONFIG`]; the summary and what was printed.
    fn run_cases(cases: &str) -> (Summary, String) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("pollgate.yaml", CONFIG),
            (
                "scan.rhai",
                "#{scanCode: #{recognized: true, relationNumber: 1}}",
            ),
            ("wait.rhai", "keep_polling(`attempt ${poll.attempt}`)"),
            ("cases.yaml", cases),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = run(
            Some(&dir.path().join("pollgate.yaml")),
            &[dir.path().join("cases.yaml")],
            &|_| None,
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(String::from_utf8(err).unwrap(), "");
        (summary, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_case_expecting_an_exact_answer_fails_on_an_extra_key_and_says_which() {
        let (summary, out) = run_cases(
            "cases:\n\
             - name: the whole answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"1\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true, relationNumber: 1}}\n      exact: true\n\
             - name: part of the answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"2\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true}}\n      exact: true\n\
             - name: an empty answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"3\"}}\n  calls:\n\
             \x20   - expect: {}\n\
             - name: exact with nothing to compare\n  event: scanCode\n  body: {scanCode: {scannedCode: \"4\"}}\n  calls:\n\
             \x20   - exact: true\n",
        );
        assert_eq!((summary.passed, summary.failed), (1, 3), "{out}");
        assert!(out.contains("  ok   the whole answer (1 call)\n"), "{out}");
        assert!(
            out.contains(
                "  FAIL part of the answer\n       call 1: expected no scanCode.relationNumber (the expectation is exact), got 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL an empty answer\n       call 1: expected no scanCode (the expectation is exact), got {\"recognized\":true,\"relationNumber\":1}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL exact with nothing to compare\n       call 1: `exact: true` needs an `expect:` to compare\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_call_same_as_an_earlier_one_fails_when_its_answer_differs_and_shows_both() {
        let (summary, out) = run_cases(
            "cases:\n\
             - name: a replayed answer\n  event: scanCode\n  body: {scanCode: {scannedCode: \"1\"}}\n  calls:\n\
             \x20   - expect: {scanCode: {recognized: true}}\n    - same_as: 1\n\
             - name: a polling answer that changes\n  event: addSessionLine\n  body: {addSessionLine: {line: {lineId: \"a\"}}}\n  calls:\n\
             \x20   - expect: {polling: {finished: false}}\n    - same_as: 1\n\
             - name: a call compared with itself\n  event: scanCode\n  body: {scanCode: {scannedCode: \"2\"}}\n  calls:\n\
             \x20   - same_as: 1\n",
        );
        assert_eq!((summary.passed, summary.failed), (1, 2), "{out}");
        assert!(
            out.contains("  ok   a replayed answer (2 calls)\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL a polling answer that changes\n       call 2: expected the same answer as call 1, byte for byte\n\
                 \x20      call 1: 200 {\"polling\":{\"finished\":false,\"message\":\"attempt 1\"}}\n\
                 \x20      call 2: 200 {\"polling\":{\"finished\":false,\"message\":\"attempt 2\"}}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "  FAIL a call compared with itself\n       call 1: `same_as: 1` names no earlier call (calls count from 1)\n"
            ),
            "{out}"
        );
    }
}
