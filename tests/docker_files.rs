#![allow(clippy::unwrap_used, clippy::expect_used)]
//! docker/Dockerfile, docker/compose.yaml and .dockerignore, checked without a Docker engine:
//! every repository path they copy or mount exists and gets into the build context, the
//! commands they run parse as pollgate commands, and the config the image and the compose
//! file start with passes `pollgate check` in the file layout the COPY and the mounts make.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use pollgate::cli::{Cli, Command as Sub};
use pollgate::config::{Config, Store};
use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- Dockerfile ---------------------------------------------------------------------------

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    base: String,
    body: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a Instruction> + 'a {
        let keyword = keyword.to_owned();
        self.body.iter().filter(move |i| i.keyword == keyword)
    }

    /// The last `keyword` instruction (the one in force), which must exist.
    fn last(&self, keyword: &str) -> &Instruction {
        self.all(keyword)
            .last()
            .unwrap_or_else(|| panic!("no {keyword} in the final stage"))
    }

    /// The stage's ENV variables, later ones winning.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for i in self.all("ENV") {
            for pair in i.args.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {}: write KEY=VALUE", i.args));
                env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        env
    }
}

/// Instructions by stage: comments dropped, `\` continuations joined.
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!("FROM {args}: expected `IMAGE [AS NAME]`"),
            };
            stages.push(Stage {
                name,
                base: words[0].to_owned(),
                body: Vec::new(),
            });
        } else {
            let stage = stages.last_mut().expect("an instruction before FROM");
            stage.body.push(Instruction { keyword, args });
        }
    }
    stages
}

/// Leading `--name=value` flags, and the rest.
fn flags(args: &str) -> (Vec<(String, String)>, &str) {
    let mut rest = args.trim_start();
    let mut out = Vec::new();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let (name, value) = after[..end].split_once('=').unwrap_or((&after[..end], ""));
        out.push((name.to_owned(), value.to_owned()));
        rest = after[end..].trim_start();
    }
    (out, rest)
}

/// An exec-form (JSON array) command; shell form is refused (no shell, no signals).
fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{what} {args}: use the exec form [\"...\"] ({e})"))
}

/// COPY/ADD: flags, sources, destination.
fn copy_parts(args: &str) -> (Vec<(String, String)>, Vec<String>, String) {
    let (flags, rest) = flags(args);
    let mut words: Vec<String> = if rest.starts_with('[') {
        exec_form("COPY", rest)
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    let dest = words.pop().expect("COPY without a destination");
    assert!(!words.is_empty(), "COPY {args}: no source");
    (flags, words, dest)
}

fn flag<'a>(flags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Where `--mount=type=bind` options of RUN read from the build context.
fn bind_sources(args: &str) -> Vec<String> {
    let (flags, _) = flags(args);
    flags
        .iter()
        .filter(|(name, _)| name == "mount")
        .filter_map(|(_, spec)| {
            let opts: BTreeMap<&str, &str> = spec
                .split(',')
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .collect();
            let is_bind = opts.get("type") == Some(&"bind");
            let from_context = !opts.contains_key("from");
            (is_bind && from_context).then(|| {
                opts.get("source")
                    .or_else(|| opts.get("src"))
                    .unwrap_or(&".")
                    .to_string()
            })
        })
        .collect()
}

// ---- .dockerignore ------------------------------------------------------------------------

/// .dockerignore rules as the builder reads them: a pattern excludes a path when it matches
/// the path or one of its parent folders, the last matching pattern wins, `!` re-includes.
struct DockerIgnore(Vec<(bool, Vec<String>)>);

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                assert!(!pattern.contains(['[', '\\']), "unsupported pattern {l}");
                let segments = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (negated, segments)
            })
            .collect();
        Self(rules)
    }

    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (negated, pattern) in &self.0 {
            if (1..=parts.len()).any(|n| glob(pattern, &parts[..n])) {
                excluded = !negated;
            }
        }
        excluded
    }
}

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| glob(rest, &path[i..])),
        Some((p, rest)) => path
            .split_first()
            .is_some_and(|(s, tail)| wildcard(p.as_bytes(), s.as_bytes()) && glob(rest, tail)),
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Every file under `rel` (a file or folder of the repository), as repository paths.
fn files_under(rel: &str) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        if dir.is_file() {
            out.push(rel.to_owned());
            return;
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            walk(&entry.path(), &format!("{rel}/{name}"), out);
        }
    }
    let rel = rel.trim_end_matches('/');
    let mut out = Vec::new();
    walk(&root().join(rel), rel, &mut out);
    out
}

/// The files `cargo build --release` needs: the manifest, the lock file, `src/` and the file
/// of every target Cargo.toml declares (a declared bench that is missing fails the build).
fn crate_files() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let mut files = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    files.extend(files_under("src"));
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some(value) = line.strip_prefix("name").map(str::trim) else {
            continue;
        };
        let Some(name) = value.strip_prefix('=').map(|v| v.trim().trim_matches('"')) else {
            continue;
        };
        let folder = match section {
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            _ => continue,
        };
        files.push(format!("{folder}/{name}.rs"));
    }
    files
}

// ---- file layouts -------------------------------------------------------------------------

fn in_root(fake_root: &Path, abs: &str) -> PathBuf {
    assert!(abs.starts_with('/'), "{abs}: expected an absolute path");
    fake_root.join(abs.trim_start_matches('/'))
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// What COPY does with one context source: a folder's contents go into DEST; a file goes to
/// DEST, or into it when DEST ends with `/`.
fn apply_copy(fake_root: &Path, source: &str, dest: &str) {
    let from = root().join(source.trim_end_matches('/'));
    let to = in_root(fake_root, dest);
    if from.is_file() && dest.ends_with('/') {
        copy_tree(&from, &to.join(from.file_name().unwrap()));
    } else {
        copy_tree(&from, &to);
    }
}

/// A bind mount: the host path hides whatever the image had at the target.
fn apply_mount(fake_root: &Path, host: &Path, target: &str) {
    let to = in_root(fake_root, target);
    if to.is_dir() {
        std::fs::remove_dir_all(&to).unwrap();
    }
    copy_tree(host, &to);
}

/// Runs `pollgate check --config CONFIG` with exactly `env`; returns stdout.
fn pollgate_check(config: &Path, env: &BTreeMap<String, String>) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "pollgate check {} failed with env {env:?}:\n{stdout}{stderr}",
        config.display()
    );
    stdout.into_owned()
}

fn load(config: &Path, env: &BTreeMap<String, String>) -> Config {
    Config::load(config, &|name| env.get(name).cloned()).unwrap_or_else(|p| panic!("{p}"))
}

/// What `pollgate healthcheck` asks, run as `argv` in `env`.
fn healthcheck_url(argv: &[String], env: &BTreeMap<String, String>) -> String {
    let Sub::Healthcheck(args) = parse_cli(argv) else {
        panic!("healthcheck {argv:?} is not `pollgate healthcheck`")
    };
    match env.get("POLLGATE_HEALTHCHECK_URL") {
        Some(url) if !argv.iter().any(|a| a.starts_with("--url")) => url.clone(),
        _ => args.url,
    }
}

fn parse_cli(argv: &[String]) -> Sub {
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{argv:?} is not a pollgate command: {e}"))
        .command
}

// ---- what the Dockerfile promises ---------------------------------------------------------

struct Image {
    stages: Vec<Stage>,
    /// The image's file system, as far as COPY from the context makes it.
    fs: tempfile::TempDir,
    env: BTreeMap<String, String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// The HEALTHCHECK command.
    healthcheck: Vec<String>,
    /// `--config` of the CMD, inside the image.
    config: String,
}

impl Image {
    fn final_stage(&self) -> &Stage {
        self.stages.last().unwrap()
    }

    fn config_in(&self, fake_root: &Path) -> PathBuf {
        in_root(fake_root, &self.config)
    }
}

fn image() -> Image {
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    let last = stages.last().expect("no FROM in docker/Dockerfile");
    let fs = tempfile::tempdir().unwrap();
    for copy in last.all("COPY").chain(last.all("ADD")) {
        let (flags, sources, dest) = copy_parts(&copy.args);
        if flag(&flags, "from").is_none() {
            for source in &sources {
                apply_copy(fs.path(), source, &dest);
            }
        }
    }
    let entrypoint = exec_form("ENTRYPOINT", &last.last("ENTRYPOINT").args);
    let cmd = exec_form("CMD", &last.last("CMD").args);
    let argv: Vec<String> = entrypoint.iter().chain(&cmd).cloned().collect();
    let Sub::Serve(serve) = parse_cli(&argv) else {
        panic!("the image's command {argv:?} is not `pollgate serve`")
    };
    assert!(
        cmd.iter().any(|a| a == "--config"),
        "CMD {cmd:?}: name the config with --config"
    );
    let config = serve.config.config.to_str().unwrap().to_owned();
    let env = last.env();
    let (_, rest) = flags(&last.last("HEALTHCHECK").args);
    let check = rest
        .strip_prefix("CMD")
        .expect("HEALTHCHECK [OPTIONS] CMD [...]");
    let healthcheck = exec_form("HEALTHCHECK", check.trim());
    Image {
        env,
        entrypoint,
        cmd,
        healthcheck,
        config,
        fs,
        stages,
    }
}

#[test]
fn dockerfile_copies_and_mounts_only_paths_that_exist_and_reach_the_context() {
    let image = image();
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let mut checked = 0;
    for stage in &image.stages {
        for i in &stage.body {
            let sources = match i.keyword.as_str() {
                "COPY" | "ADD" => {
                    let (flags, sources, _) = copy_parts(&i.args);
                    if flag(&flags, "from").is_some() {
                        continue;
                    }
                    sources
                }
                "RUN" => bind_sources(&i.args),
                _ => continue,
            };
            for source in sources {
                assert!(
                    !source.contains(['*', '?', '$']) && !source.starts_with('/'),
                    "{} {}: use plain repository paths",
                    i.keyword,
                    i.args
                );
                let path = root().join(&source);
                assert!(
                    path.exists(),
                    "{}: {source} is not in the repository",
                    i.keyword
                );
                // The whole context: what cargo needs must get through .dockerignore.
                let files = if source.trim_end_matches('/') == "." {
                    crate_files()
                } else {
                    files_under(&source)
                };
                for file in files {
                    assert!(root().join(&file).exists(), "{file}: missing");
                    assert!(
                        !ignore.excludes(&file),
                        "{file} is needed by `{} {}` but .dockerignore leaves it out",
                        i.keyword,
                        i.args
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} files checked");
}

#[test]
fn dockerignore_leaves_out_build_output_and_git() {
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    for path in ["target", "target/release/pollgate", ".git/HEAD"] {
        assert!(ignore.excludes(path), ".dockerignore lets {path} through");
    }
    for path in ["Cargo.toml", "src/main.rs", "rules/pollgate.yaml"] {
        assert!(!ignore.excludes(path), ".dockerignore leaves out {path}");
    }
    // The matcher itself.
    let m = DockerIgnore::parse("*\n!src\n**/*.swp\n");
    assert!(m.excludes("README.md") && m.excludes("src/a.swp") && m.excludes("x/y/z"));
    assert!(!m.excludes("src/main.rs"));
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_pollgate_unprivileged_in_another() {
    let image = image();
    let stages = &image.stages;
    assert!(stages.len() >= 2, "not a multi-stage build");
    let last = image.final_stage();
    assert!(
        !last.base.starts_with("rust:"),
        "the runtime image is the toolchain image"
    );
    for stage in stages {
        assert!(
            stage.base.contains(':') && !stage.base.ends_with(":latest"),
            "FROM {}: pin a tag",
            stage.base
        );
    }

    // The binary: built with the lock file, copied from the build stage onto PATH.
    let build = stages
        .iter()
        .find(|s| s.all("RUN").any(|r| r.args.contains("cargo build")))
        .expect("no stage runs cargo build");
    assert!(build
        .all("RUN")
        .any(|r| r.args.contains("cargo build --release --locked")));
    let build_name = build
        .name
        .as_deref()
        .expect("name the build stage (AS build)");
    let binary = last
        .all("COPY")
        .map(|c| copy_parts(&c.args))
        .find(|(flags, _, _)| flag(flags, "from") == Some(build_name))
        .map(|(_, _, dest)| dest)
        .expect("the final stage copies nothing from the build stage");
    assert_eq!(image.entrypoint, ["pollgate"]);
    assert!(
        binary == "/usr/local/bin/pollgate" || binary == "/usr/local/bin/",
        "the binary goes to {binary}, not onto the default PATH as `pollgate`"
    );

    // The default config is the shipped rules/pollgate.yaml, where the COPY put it.
    assert!(
        image.config_in(image.fs.path()).is_file(),
        "CMD {:?} names {}, but the image's COPY puts nothing there",
        image.cmd,
        image.config
    );
    assert_eq!(
        std::fs::read(image.config_in(image.fs.path())).unwrap(),
        std::fs::read(root().join("rules/pollgate.yaml")).unwrap(),
        "{} in the image is not rules/pollgate.yaml",
        image.config
    );
    assert_eq!(
        image.env.get("POLLGATE_CONFIG"),
        Some(&image.config),
        "POLLGATE_CONFIG (for `check` and `test`) differs from the CMD's --config"
    );
    let workdir = &last.last("WORKDIR").args;
    assert!(
        workdir.starts_with('/'),
        "WORKDIR {workdir}: make it absolute"
    );

    // Not root: a fixed numeric uid, created in the image.
    let user = &last.last("USER").args;
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: use a fixed numeric uid"));
    assert!(uid > 0, "USER {user} is root");
    assert!(
        last.all("RUN")
            .any(|r| r.args.contains(&format!("--uid {uid}"))),
        "no RUN creates the user with uid {uid}"
    );

    // The shipped config with the image's environment: valid, listening where EXPOSE says.
    let config = image.config_in(image.fs.path());
    pollgate_check(&config, &image.env);
    let loaded = load(&config, &image.env);
    assert!(
        loaded.server.listen.ip().is_unspecified(),
        "the image's webhook listener is on {}, unreachable from outside the container",
        loaded.server.listen
    );
    let exposed: Vec<u16> = last
        .all("EXPOSE")
        .flat_map(|e| e.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    for port in [loaded.server.listen.port(), loaded.admin.listen.port()] {
        assert!(exposed.contains(&port), "EXPOSE {exposed:?} misses {port}");
    }

    // HEALTHCHECK: pollgate's own subcommand (no curl), asking the admin listener.
    assert_eq!(
        healthcheck_url(&image.healthcheck, &image.env),
        format!("http://127.0.0.1:{}/readyz", loaded.admin.listen.port()),
        "the image's healthcheck does not ask the admin listener's /readyz"
    );
    assert_eq!(last.last("STOPSIGNAL").args, "SIGTERM");
}

// ---- compose ------------------------------------------------------------------------------

fn compose() -> Value {
    serde_yaml::from_str(&read("docker/compose.yaml")).unwrap()
}

fn docker_dir() -> PathBuf {
    root().join("docker")
}

/// Compose's `${NAME:-default}` as a shell without those variables sees it.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unclosed ${");
            let reference = &body[..end];
            if let Some((_, default)) = reference.split_once(":-").or(reference.split_once('-')) {
                out.push_str(default);
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(interpolate(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(|i| scalar(i).unwrap()).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A service's environment; a name without a value comes from the caller's shell, and here
/// the shell has none of them, so it is left unset.
fn service_env(service: &Value) -> BTreeMap<String, Option<String>> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), scalar(v)))
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let s = i.as_str().unwrap();
                match s.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(interpolate(v))),
                    None => (s.to_owned(), None),
                }
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// Bind mounts as (host path, target), in either syntax.
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    let Value::Sequence(volumes) = &service["volumes"] else {
        return Vec::new();
    };
    volumes
        .iter()
        .filter_map(|v| {
            let (source, target) = match v {
                Value::String(s) => {
                    let mut parts = s.split(':');
                    (parts.next()?.to_owned(), parts.next()?.to_owned())
                }
                Value::Mapping(_) => {
                    if v["type"].as_str() != Some("bind") {
                        return None;
                    }
                    (scalar(&v["source"])?, scalar(&v["target"])?)
                }
                _ => return None,
            };
            // A name without `.` or `/` is a named volume, not a repository path.
            (source.starts_with('.') || source.starts_with('/')).then(|| {
                assert!(
                    !source.starts_with('/'),
                    "{source}: mount a repository path"
                );
                (docker_dir().join(source), target)
            })
        })
        .collect()
}

/// The first service `what` picks, with its name.
fn service_by(services: &Value, what: impl Fn(&Value) -> bool) -> (&str, &Value) {
    services
        .as_mapping()
        .unwrap()
        .iter()
        .find(|(_, s)| what(s))
        .map(|(name, s)| (name.as_str().unwrap(), s))
        .expect("no such service in docker/compose.yaml")
}

/// `build:` is this repository's docker/Dockerfile.
fn builds_our_image(service: &Value) -> bool {
    let build = &service["build"];
    let (context, dockerfile) = match build {
        Value::String(c) => (c.as_str(), "Dockerfile"),
        Value::Mapping(_) => (
            build["context"].as_str().unwrap_or("."),
            build["dockerfile"].as_str().unwrap_or("Dockerfile"),
        ),
        _ => return false,
    };
    let dockerfile = docker_dir().join(context).join(dockerfile);
    dockerfile.canonicalize().ok() == root().join("docker/Dockerfile").canonicalize().ok()
}

fn published(service: &Value) -> Vec<String> {
    strings(&service["ports"])
}

#[test]
fn compose_runs_pollgate_with_redis_and_the_demo_back_end() {
    let compose = compose();
    let services = &compose["services"];
    let pollgate = &services["pollgate"];
    assert!(pollgate.is_mapping(), "no `pollgate` service");
    assert!(
        builds_our_image(pollgate),
        "pollgate is not built from docker/Dockerfile"
    );
    let (redis_name, _) = service_by(services, |s| {
        s["image"].as_str().is_some_and(|i| i.starts_with("redis:"))
    });
    let (backend_name, backend) = service_by(services, |s| {
        strings(&s["command"]).first().map(String::as_str) == Some("demo-backend")
    });
    assert!(
        builds_our_image(backend) || backend["image"] == pollgate["image"],
        "the demo back end does not run the pollgate image"
    );
    let backend_argv: Vec<String> = std::iter::once("pollgate".to_owned())
        .chain(strings(&backend["command"]))
        .collect();
    let Sub::DemoBackend(backend_args) = parse_cli(&backend_argv) else {
        panic!("{backend_argv:?} is not `pollgate demo-backend`")
    };
    assert!(backend_args.listen.ip().is_unspecified());
    // The image's HEALTHCHECK asks the gateway's admin port, which the demo back end lacks.
    let hc = &backend["healthcheck"];
    assert!(
        hc["disable"].as_bool() == Some(true) || !hc["test"].is_null(),
        "the demo back end inherits the gateway's healthcheck and would be unhealthy"
    );
    let depends = &pollgate["depends_on"];
    assert!(
        !depends[redis_name].is_null() || strings(depends).iter().any(|d| d == redis_name),
        "pollgate does not depend on {redis_name}"
    );

    // The mounts, where the running container sees them: start from the image's files.
    let image = image();
    let mounts = bind_mounts(pollgate);
    assert!(!mounts.is_empty(), "compose mounts no config into pollgate");
    let mut ordered = mounts.clone();
    ordered.sort_by_key(|(_, target)| target.matches('/').count()); // parents first, as Docker does
    for (host, target) in &ordered {
        assert!(host.exists(), "{}: not in the repository", host.display());
        apply_mount(image.fs.path(), host, target);
    }
    let config_mount = mounts
        .iter()
        .find(|(_, target)| *target == image.config)
        .map(|(host, _)| host.clone())
        .expect("compose mounts no config file at the image's config path");

    // The container's environment: the image's, then the service's.
    let mut env = image.env.clone();
    for (name, value) in service_env(pollgate) {
        match value {
            Some(v) => env.insert(name, v),
            None => env.remove(&name),
        };
    }
    let config_path = match strings(&pollgate["command"]).as_slice() {
        [] => image.config.clone(),
        cmd => {
            let argv: Vec<String> = image.entrypoint.iter().chain(cmd).cloned().collect();
            let Sub::Serve(serve) = parse_cli(&argv) else {
                panic!("pollgate's command {argv:?} is not `serve`")
            };
            serve.config.config.to_str().unwrap().to_owned()
        }
    };
    let config = in_root(image.fs.path(), &config_path);
    let stdout = pollgate_check(&config, &env);
    assert!(stdout.contains(": ok ("), "{stdout}");
    let loaded = load(&config, &env);

    // Conversations in the redis service; approvals from the demo back end.
    let Store::Redis { url, .. } = &loaded.state.store else {
        panic!("the compose config keeps conversations in memory, not in {redis_name}")
    };
    let url = reqwest::Url::parse(url).unwrap();
    assert_eq!(url.host_str(), Some(redis_name), "state.url {url}");
    let approvals = &loaded.upstreams["approvals"].url;
    assert_eq!(
        approvals.host_str(),
        Some(backend_name),
        "approvals {approvals}"
    );
    assert_eq!(approvals.port(), Some(backend_args.listen.port()));

    // Published ports reach the listeners; admin only on the host's loopback.
    let ports = published(pollgate);
    let webhook = loaded.server.listen;
    let admin = loaded.admin.listen;
    assert!(webhook.ip().is_unspecified() && admin.ip().is_unspecified());
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{}", webhook.port()))),
        "webhook port {} not published: {ports:?}",
        webhook.port()
    );
    let admin_ports: Vec<&String> = ports
        .iter()
        .filter(|p| p.ends_with(&format!(":{}", admin.port())))
        .collect();
    assert!(
        !admin_ports.is_empty() && admin_ports.iter().all(|p| p.starts_with("127.0.0.1:")),
        "the admin port {} (no authentication) should be published on the host's loopback \
         only: {ports:?}",
        admin.port()
    );
    // The healthcheck (the image's unless the service has its own) asks this admin listener.
    let healthcheck = match strings(&pollgate["healthcheck"]["test"]).as_slice() {
        [] => image.healthcheck,
        [kind, argv @ ..] if kind == "CMD" => argv.to_vec(),
        other => panic!("pollgate's healthcheck {other:?}: use [\"CMD\", \"pollgate\", ...]"),
    };
    assert_eq!(
        healthcheck_url(&healthcheck, &env),
        format!("http://127.0.0.1:{}/readyz", admin.port()),
        "pollgate's healthcheck in compose does not ask its admin listener's /readyz"
    );

    // The compose config is the shipped one but for `state`.
    let mut ours: Value = serde_yaml::from_str(&std::fs::read_to_string(config_mount).unwrap())
        .expect("compose config");
    let mut shipped: Value = serde_yaml::from_str(&read("rules/pollgate.yaml")).unwrap();
    ours.as_mapping_mut().unwrap().remove("state");
    shipped.as_mapping_mut().unwrap().remove("state");
    assert_eq!(
        ours, shipped,
        "docker/compose/pollgate.yaml differs from rules/pollgate.yaml beyond `state`: keep them in step"
    );
}

#[test]
fn compose_builds_the_image_once_and_the_demo_back_end_runs_it() {
    let compose = compose();
    let services = &compose["services"];
    let pollgate = &services["pollgate"];
    let (backend_name, backend) = service_by(services, |s| {
        strings(&s["command"]).first().map(String::as_str) == Some("demo-backend")
    });
    let image = pollgate["image"]
        .as_str()
        .expect("the pollgate service names the image it builds (`image:`)");
    assert!(builds_our_image(pollgate));
    assert_eq!(
        backend["image"].as_str(),
        Some(image),
        "{backend_name} does not run the image the pollgate service builds"
    );
    assert!(
        backend["build"].is_null(),
        "{backend_name} builds the image a second time"
    );
    // The image is on no registry: `up` must not try to pull it for the demo back end.
    assert_eq!(backend["pull_policy"].as_str(), Some("never"));
    let builders: Vec<&Value> = services
        .as_mapping()
        .unwrap()
        .values()
        .filter(|s| builds_our_image(s))
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "docker/Dockerfile is built more than once"
    );
}

#[test]
fn compose_publishes_every_port_on_the_hosts_loopback_only() {
    let compose = compose();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        for port in published(service) {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port} on every interface; the example runs with the public demo secret"
            );
        }
    }
    // The way to open it up, with a real secret, is in the file and in docker/README.md.
    let text = read("docker/compose.yaml");
    assert!(text.contains("MPLUS_SECRET") && text.contains("\"8080:8080\""));
    let readme = read("docker/README.md");
    assert!(readme.contains("Opening the webhook port to tills on other machines"));
}

/// `docker compose ... exec pollgate pollgate simulate ...` lines of `text`, as argv.
fn simulate_examples(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once("exec pollgate pollgate simulate"))
        .map(|(_, args)| {
            ["pollgate", "simulate"]
                .into_iter()
                .map(str::to_owned)
                .chain(args.split_whitespace().map(str::to_owned))
                .collect()
        })
        .collect()
}

#[test]
fn the_compose_simulate_example_pays_enough_to_reach_the_demo_back_end() {
    let compose_text = read("docker/compose.yaml");
    let readme = read("docker/README.md");
    let examples = simulate_examples(&compose_text);
    assert_eq!(
        examples.len(),
        1,
        "one simulate example in docker/compose.yaml"
    );
    assert_eq!(
        simulate_examples(&readme),
        examples,
        "docker/README.md shows another simulate example than docker/compose.yaml"
    );
    let Sub::Simulate(args) = parse_cli(&examples[0]) else {
        panic!("{:?} is not `pollgate simulate`", examples[0])
    };
    assert_eq!(args.event, "startPayment");
    let body = args.body.expect(
        "the example sends the default body (a 4.25 Cappuccino), which never reaches the back end",
    );

    // The container's files: the image's, then the pollgate service's mounts.
    let image = image();
    let pollgate = &compose()["services"]["pollgate"];
    let mut mounts = bind_mounts(pollgate);
    mounts.sort_by_key(|(_, target)| target.matches('/').count());
    for (host, target) in &mounts {
        apply_mount(image.fs.path(), host, target);
    }
    let workdir = image.final_stage().last("WORKDIR").args.clone();
    let body = in_root(image.fs.path(), &format!("{workdir}/{}", body.display()));
    assert!(
        body.is_file(),
        "{}: the example's --body is not in the container",
        body.display()
    );

    // Through the container's config and rules: the body takes the approval path (one
    // forward to the back end, the till kept polling until the reply).
    let config = image.config_in(image.fs.path());
    let cases = image.fs.path().join("compose-example.yaml");
    std::fs::write(
        &cases,
        format!(
            "config: {}\ncases:\n  - name: the compose example's payment waits for the demo back end\n    event: startPayment\n    body_file: {}\n    upstreams:\n      approvals: {{status: 200, body: {{approved: true, manager: \"Sam\"}}, delay: 3s}}\n    forwards: {{approvals: 1}}\n    calls:\n      - expect: {{polling: {{finished: false}}}}\n      - after: 3s\n        expect: {{polling: {{finished: true, message: \"Approved by Sam\"}}}}\n",
            config.display(),
            body.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pollgate"))
        .arg("test")
        .arg(&cases)
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("1 passed, 0 failed\n"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
