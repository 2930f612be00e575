//! Which test files to run, and which config a test file runs against (see the module
//! docs of [`super`]).

use std::path::{Path, PathBuf};

use crate::config::{Problem, DEFAULT_CONFIG_PATH};

/// The config for a test file in `file_dir` that names none (see the module's docs).
pub(super) fn config_for(file_dir: &Path, given: Option<&Path>) -> PathBuf {
    let dir = if file_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        file_dir
    };
    // `tests` → `.`, `rules/tests` → `rules`, but `.` and `..` → `./..`, `../..`.
    let parent = match dir.components().next_back() {
        Some(std::path::Component::Normal(_)) => dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        _ => dir.join(".."),
    };
    lookup(given, &[dir.to_path_buf(), parent])
}

/// `given`, else the default path if it exists, else the first `pollgate.yaml` in `dirs`,
/// else the default path (so the error names it).
pub(super) fn lookup(given: Option<&Path>, dirs: &[PathBuf]) -> PathBuf {
    if let Some(given) = given {
        return given.to_path_buf();
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    if default.is_file() {
        return default.to_path_buf();
    }
    dirs.iter()
        .map(|d| d.join("pollgate.yaml"))
        .find(|c| c.is_file())
        .unwrap_or_else(|| default.to_path_buf())
}

pub(super) fn test_files(
    config: Option<&Path>,
    paths: &[PathBuf],
) -> Result<Vec<PathBuf>, Vec<Problem>> {
    let config = lookup(config, &[PathBuf::from(".")]);
    let default_dir = config.parent().unwrap_or(Path::new(".")).join("tests");
    let roots = if paths.is_empty() {
        vec![default_dir]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            let entries = std::fs::read_dir(&root)
                .map_err(|e| vec![Problem::in_file(&root, format!("cannot read folder: {e}"))])?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else if root.is_file() {
            files.push(root);
        } else {
            return Err(vec![Problem::in_file(&root, "no such test file or folder")]);
        }
    }
    if files.is_empty() {
        return Err(vec![Problem::in_file(&config, "no rule test files found")]);
    }
    Ok(files)
}
