#![allow(clippy::unwrap_used, clippy::expect_used)]
//! docker/Dockerfile, docker/compose.yaml and .dockerignore, checked without a Docker engine:
//! every repository path they copy or mount exists and gets into the build context, the
//! commands they run parse as pollgate commands, and the config the image and the compose
//! file start with passes `pollgate check` in the file layout the COPY and the mounts make.
//! The readers below take the syntax these files use and fail on any other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use pollgate::cli::{Cli, Command as Sub};
use pollgate::config::{Config, Store};
use serde_yaml::Value;

type Env = BTreeMap<String, String>;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- Dockerfile ---------------------------------------------------------------------------

struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    name: Option<String>,
    base: String,
    body: Vec<Instruction>,
}

impl Stage {
    /// The arguments of every `keyword` instruction, in order.
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let of_kind = self.body.iter().filter(move |i| i.keyword == keyword);
        of_kind.map(|i| i.args.as_str())
    }

    /// The last `keyword` instruction (the one in force), which must exist.
    fn last<'a>(&'a self, keyword: &'a str) -> &'a str {
        let last = self.all(keyword).last();
        last.unwrap_or_else(|| panic!("no {keyword} in the final stage"))
    }

    /// The stage's ENV variables (`KEY=VALUE` pairs), later ones winning.
    fn env(&self) -> Env {
        let pairs = self.all("ENV").flat_map(str::split_whitespace).map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV: write KEY=VALUE");
            (k.to_owned(), v.trim_matches('"').to_owned())
        });
        pairs.collect()
    }
}

/// Instructions by stage: comments dropped, `\` continuations joined.
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let joined = lines.iter().filter(|l| !l.starts_with('#')).cloned();
    let joined = joined.collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    assert!(
        !joined.ends_with('\\'),
        "Dockerfile ends inside a continuation"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword != "FROM" {
            let stage = stages.last_mut().expect("an instruction before FROM");
            stage.body.push(Instruction { keyword, args });
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let name = match words.as_slice() {
            [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
            [_] => None,
            _ => panic!("FROM {args}: expected `IMAGE [AS NAME]`"),
        };
        let base = words[0].to_owned();
        stages.push(Stage {
            name,
            base,
            body: Vec::new(),
        });
    }
    stages
}

/// Leading `--name=value` flags, and the rest.
fn flags(args: &str) -> (Vec<(&str, &str)>, &str) {
    let (mut out, mut rest) = (Vec::new(), args.trim_start());
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        out.push(after[..end].split_once('=').unwrap_or((&after[..end], "")));
        rest = after[end..].trim_start();
    }
    (out, rest)
}

/// An exec-form (JSON array) command; shell form is refused (no shell, no signals).
fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{what} {args}: use the exec form [\"...\"] ({e})"))
}

/// COPY/ADD: the `--from` stage, the sources, the destination.
fn copy_parts(args: &str) -> (Option<&str>, Vec<String>, String) {
    let (flags, rest) = flags(args);
    let mut words: Vec<String> = match rest.starts_with('[') {
        true => exec_form("COPY", rest),
        false => rest.split_whitespace().map(str::to_owned).collect(),
    };
    let dest = words.pop().expect("COPY without a destination");
    assert!(!words.is_empty(), "COPY {args}: no source");
    let from = flags.iter().find(|(n, _)| *n == "from").map(|(_, v)| *v);
    (from, words, dest)
}

/// Where `--mount=type=bind` options of RUN read from the build context.
fn bind_sources(args: &str) -> Vec<String> {
    let mounts = flags(args)
        .0
        .into_iter()
        .filter(|(name, _)| *name == "mount");
    let opts = mounts.map(|(_, spec)| -> BTreeMap<&str, &str> {
        spec.split(',')
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect()
    });
    let from_context = opts.filter(|o| o.get("type") == Some(&"bind") && !o.contains_key("from"));
    from_context
        .map(|o| {
            o.get("source")
                .or_else(|| o.get("src"))
                .unwrap_or(&".")
                .to_string()
        })
        .collect()
}

// ---- .dockerignore ------------------------------------------------------------------------

/// .dockerignore rules as the builder reads them: a pattern excludes a path when it matches
/// the path or one of its parent folders, the last matching pattern wins, `!` re-includes.
struct DockerIgnore(Vec<(bool, Vec<String>)>);

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let lines = text.lines().map(str::trim);
        let rules = lines
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, pattern) = l.strip_prefix('!').map_or((false, l), |p| (true, p));
                assert!(!pattern.contains(['[', '\\']), "unsupported pattern {l}");
                let segments = pattern.trim_matches('/').split('/');
                let segments = segments.filter(|s| !s.is_empty() && *s != ".");
                (negated, segments.map(str::to_owned).collect())
            });
        Self(rules.collect())
    }

    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let matches = |pattern: &[String]| (1..=parts.len()).any(|n| glob(pattern, &parts[..n]));
        let mut last = self.0.iter().rev().filter(|(_, pattern)| matches(pattern));
        last.next().is_some_and(|(negated, _)| !negated)
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
    let rel = rel.trim_end_matches('/');
    if root().join(rel).is_file() {
        return vec![rel.to_owned()];
    }
    let entries = std::fs::read_dir(root().join(rel)).unwrap();
    let names = entries.map(|e| e.unwrap().file_name().into_string().unwrap());
    names
        .flat_map(|name| files_under(&format!("{rel}/{name}")))
        .collect()
}

/// The files `cargo build --release` needs: the manifest, the lock file, `src/` and the file
/// of every target Cargo.toml declares (a declared bench that is missing fails the build).
fn crate_files() -> Vec<String> {
    let mut files = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    files.extend(files_under("src"));
    let mut folder = None;
    for line in read("Cargo.toml").lines().map(str::trim) {
        if line.starts_with('[') {
            let targets = [
                ("[[bench]]", "benches"),
                ("[[test]]", "tests"),
                ("[[example]]", "examples"),
            ];
            folder = targets.iter().find(|(s, _)| *s == line).map(|(_, f)| *f);
        } else if let (Some(folder), Some(value)) = (folder, line.strip_prefix("name")) {
            let Some(name) = value.trim().strip_prefix('=') else {
                continue;
            };
            files.push(format!("{folder}/{}.rs", name.trim().trim_matches('"')));
        }
    }
    files
}

// ---- file layouts and pollgate ------------------------------------------------------------

fn in_root(fake_root: &Path, abs: &str) -> PathBuf {
    assert!(abs.starts_with('/'), "{abs}: expected an absolute path");
    fake_root.join(abs.trim_start_matches('/'))
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
        return std::fs::create_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

/// Runs `pollgate check --config CONFIG` with exactly `env`; returns stdout.
fn pollgate_check(config: &Path, env: &Env) -> String {
    let mut check = Command::new(env!("CARGO_BIN_EXE_pollgate"));
    let out = check
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(env);
    let out = out.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = config.display();
    assert!(
        out.status.success(),
        "pollgate check {shown} failed with env {env:?}:\n{stdout}{stderr}"
    );
    stdout
}

fn load(config: &Path, env: &Env) -> Config {
    Config::load(config, &|name| env.get(name).cloned()).unwrap_or_else(|p| panic!("{p}"))
}

fn parse_cli(argv: &[String]) -> Sub {
    let cli = Cli::try_parse_from(argv);
    cli.unwrap_or_else(|e| panic!("{argv:?} is not a pollgate command: {e}"))
        .command
}

/// What `pollgate healthcheck` asks, run as `argv` in `env`.
fn healthcheck_url(argv: &[String], env: &Env) -> String {
    let Sub::Healthcheck(args) = parse_cli(argv) else {
        panic!("healthcheck {argv:?} is not `pollgate healthcheck`")
    };
    match env.get("POLLGATE_HEALTHCHECK_URL") {
        Some(url) if !argv.iter().any(|a| a.starts_with("--url")) => url.clone(),
        _ => args.url,
    }
}

/// `--config` of a `pollgate serve` command line.
fn serve_config(argv: &[String]) -> String {
    let Sub::Serve(serve) = parse_cli(argv) else {
        panic!("the command {argv:?} is not `pollgate serve`")
    };
    serve.config.config.to_str().unwrap().to_owned()
}

// ---- what the Dockerfile promises ---------------------------------------------------------

struct Image {
    stages: Vec<Stage>,
    /// The image's file system, as far as COPY from the context makes it.
    fs: tempfile::TempDir,
    env: Env,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// The HEALTHCHECK command.
    healthcheck: Vec<String>,
    /// `--config` of the CMD, inside the image.
    config: String,
}

impl Image {
    fn last(&self) -> &Stage {
        self.stages.last().unwrap()
    }

    fn path(&self, abs: &str) -> PathBuf {
        in_root(self.fs.path(), abs)
    }

    /// Bind mounts: each host path hides whatever the image had at its target (parents
    /// first, as Docker does).
    fn mount(&self, mut mounts: Vec<(PathBuf, String)>) {
        mounts.sort_by_key(|(_, target)| target.matches('/').count());
        for (host, target) in &mounts {
            assert!(host.exists(), "{}: not in the repository", host.display());
            if self.path(target).is_dir() {
                std::fs::remove_dir_all(self.path(target)).unwrap();
            }
            copy_tree(host, &self.path(target));
        }
    }
}

fn image() -> Image {
    let stages = parse_dockerfile(&read("docker/Dockerfile"));
    let last = stages.last().expect("no FROM in docker/Dockerfile");
    let fs = tempfile::tempdir().unwrap();
    for (from, sources, dest) in last.all("COPY").chain(last.all("ADD")).map(copy_parts) {
        // A folder's contents go into DEST; a file goes to DEST, or into it for `DEST/`.
        for source in sources.iter().filter(|_| from.is_none()) {
            let source = root().join(source.trim_end_matches('/'));
            let to = in_root(fs.path(), &dest);
            match source.is_file() && dest.ends_with('/') {
                true => copy_tree(&source, &to.join(source.file_name().unwrap())),
                false => copy_tree(&source, &to),
            }
        }
    }
    let entrypoint = exec_form("ENTRYPOINT", last.last("ENTRYPOINT"));
    let cmd = exec_form("CMD", last.last("CMD"));
    let config = serve_config(&[entrypoint.clone(), cmd.clone()].concat());
    assert!(
        cmd.iter().any(|a| a == "--config"),
        "CMD {cmd:?}: name the config with --config"
    );
    let check = flags(last.last("HEALTHCHECK")).1.strip_prefix("CMD");
    let healthcheck = exec_form(
        "HEALTHCHECK",
        check.expect("HEALTHCHECK [OPTIONS] CMD [...]").trim(),
    );
    let env = last.env();
    Image {
        stages,
        fs,
        env,
        entrypoint,
        cmd,
        healthcheck,
        config,
    }
}

#[test]
fn dockerfile_copies_and_mounts_only_paths_that_exist_and_reach_the_context() {
    let image = image();
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let mut checked = 0;
    for i in image.stages.iter().flat_map(|s| &s.body) {
        let sources = match i.keyword.as_str() {
            "COPY" | "ADD" => match copy_parts(&i.args) {
                (None, sources, _) => sources,
                (Some(_), ..) => continue,
            },
            "RUN" => bind_sources(&i.args),
            _ => continue,
        };
        let what = format!("{} {}", i.keyword, i.args);
        for source in sources {
            let plain = !source.contains(['*', '?', '$']) && !source.starts_with('/');
            assert!(plain, "{what}: use plain repository paths");
            let exists = root().join(&source).exists();
            assert!(exists, "{}: {source} is not in the repository", i.keyword);
            // The whole context: what cargo needs must get through .dockerignore.
            let files = match source.trim_end_matches('/') {
                "." => crate_files(),
                _ => files_under(&source),
            };
            for file in files {
                assert!(root().join(&file).exists(), "{file}: missing");
                let excluded = ignore.excludes(&file);
                assert!(
                    !excluded,
                    "{file} is needed by `{what}` but .dockerignore leaves it out"
                );
                checked += 1;
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
    let (stages, last) = (&image.stages, image.last());
    assert!(stages.len() >= 2, "not a multi-stage build");
    assert!(
        !last.base.starts_with("rust:"),
        "the runtime image is the toolchain image"
    );
    // `scratch` is no image but the empty file system; every other base names its tag.
    for base in stages.iter().map(|s| &s.base).filter(|b| *b != "scratch") {
        assert!(
            base.contains(':') && !base.ends_with(":latest"),
            "FROM {base}: pin a tag"
        );
    }

    // The binary: built with the lock file, copied from the build stage onto PATH.
    let builds = |s: &&Stage| s.all("RUN").any(|r| r.contains("cargo build"));
    let build = stages
        .iter()
        .find(builds)
        .expect("no stage runs cargo build");
    assert!(build
        .all("RUN")
        .any(|r| r.contains("cargo build --release --locked")));
    let build_name = build
        .name
        .as_deref()
        .expect("name the build stage (AS build)");
    let copies = last.all("COPY").map(copy_parts);
    let mut binary = copies
        .filter(|(from, ..)| *from == Some(build_name))
        .map(|(.., dest)| dest);
    let binary = binary
        .next()
        .expect("the final stage copies nothing from the build stage");
    assert_eq!(image.entrypoint, ["pollgate"]);
    assert!(
        binary == "/usr/local/bin/pollgate" || binary == "/usr/local/bin/",
        "the binary goes to {binary}, not onto the default PATH as `pollgate`"
    );

    // The default config is the shipped rules/pollgate.yaml, where the COPY put it.
    let (config, cmd) = (image.path(&image.config), &image.cmd);
    let named = &image.config;
    assert!(
        config.is_file(),
        "CMD {cmd:?} names {named}, but the image's COPY puts nothing there"
    );
    let shipped = std::fs::read(root().join("rules/pollgate.yaml")).unwrap();
    assert_eq!(
        std::fs::read(&config).unwrap(),
        shipped,
        "{named} in the image is not rules/pollgate.yaml"
    );
    let differs = "POLLGATE_CONFIG (for `check` and `test`) differs from the CMD's --config";
    assert_eq!(image.env.get("POLLGATE_CONFIG"), Some(named), "{differs}");
    let workdir = last.last("WORKDIR");
    assert!(
        workdir.starts_with('/'),
        "WORKDIR {workdir}: make it absolute"
    );

    // Not root: a fixed numeric uid, created in the image: by a RUN of the final stage or,
    // when that one is `FROM scratch` (no RUN), of a stage it copies its files from.
    let user = last.last("USER");
    let uid = user.split(':').next().unwrap().parse::<u32>();
    let uid = uid.unwrap_or_else(|_| panic!("USER {user}: use a fixed numeric uid"));
    assert!(uid > 0, "USER {user} is root");
    let copied_from: Vec<&str> = last.all("COPY").filter_map(|c| copy_parts(c).0).collect();
    let feeds_last = |s: &&Stage| {
        std::ptr::eq(*s, last) || s.name.as_deref().is_some_and(|n| copied_from.contains(&n))
    };
    let mut runs = stages.iter().filter(feeds_last).flat_map(|s| s.all("RUN"));
    let created = runs.any(|r| r.contains(&format!("--uid {uid}")));
    assert!(
        created,
        "no RUN of the image's stages creates the user with uid {uid}"
    );

    // The shipped config with the image's environment: valid, listening where EXPOSE says.
    pollgate_check(&config, &image.env);
    let loaded = load(&config, &image.env);
    let listen = loaded.server.listen;
    assert!(
        listen.ip().is_unspecified(),
        "the image's webhook listener is on {listen}, unreachable from outside the container"
    );
    let ports = last.all("EXPOSE").flat_map(str::split_whitespace);
    let exposed: Vec<u16> = ports
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    for port in [listen.port(), loaded.admin.listen.port()] {
        assert!(exposed.contains(&port), "EXPOSE {exposed:?} misses {port}");
    }

    // HEALTHCHECK: pollgate's own subcommand (no curl), asking the admin listener.
    assert_eq!(
        healthcheck_url(&image.healthcheck, &image.env),
        format!("http://127.0.0.1:{}/readyz", loaded.admin.listen.port()),
        "the image's healthcheck does not ask the admin listener's /readyz"
    );
    assert_eq!(last.last("STOPSIGNAL"), "SIGTERM");
}

// ---- compose ------------------------------------------------------------------------------

fn compose() -> Value {
    serde_yaml::from_str(&read("docker/compose.yaml")).unwrap()
}

fn docker_dir() -> PathBuf {
    root().join("docker")
}

/// A scalar as compose passes it on; `${...}` interpolation is refused, not guessed at,
/// but for a whole value `${NAME:?why}`: compose refuses to start without NAME in the
/// shell, so here it stands for a value the user set.
fn scalar(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) if s.starts_with("${") && s.ends_with('}') && s.contains(":?") => {
            return Some(format!("{s}-as-set-in-the-shell"));
        }
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    assert!(
        !text.contains('$'),
        "{text}: compose interpolation is not read by this check"
    );
    Some(text)
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(|i| scalar(i).unwrap()).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A service's environment (a mapping); a name without a value comes from the caller's
/// shell, and here the shell has none of them, so it is left unset.
fn service_env(service: &Value) -> Vec<(String, Option<String>)> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), scalar(v))),
        Value::Null => return Vec::new(),
        other => panic!("environment: write a mapping, not {other:?}"),
    }
    .collect()
}

/// Bind mounts (`HOST:TARGET[:MODE]`) as (host path, target); named volumes are left out.
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    let volumes = strings(&service["volumes"]);
    let parsed = volumes
        .iter()
        .filter_map(|v| v.split_once(':'))
        .map(|(source, rest)| (source, rest.split(':').next().unwrap().to_owned()));
    // A name without `.` or `/` is a named volume, not a repository path.
    let binds = parsed.filter(|(source, _)| source.starts_with(['.', '/']));
    binds
        .map(|(source, target)| {
            assert!(
                !source.starts_with('/'),
                "{source}: mount a repository path"
            );
            (docker_dir().join(source), target)
        })
        .collect()
}

/// The first service `what` picks, with its name.
fn service_by(services: &Value, what: impl Fn(&Value) -> bool) -> (&str, &Value) {
    let mut all = services.as_mapping().unwrap().iter();
    let (name, service) = all
        .find(|(_, s)| what(s))
        .expect("no such service in docker/compose.yaml");
    (name.as_str().unwrap(), service)
}

fn demo_backend(services: &Value) -> (&str, &Value) {
    service_by(services, |s| {
        strings(&s["command"]).first().map(String::as_str) == Some("demo-backend")
    })
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
    let is_redis = |s: &Value| s["image"].as_str().is_some_and(|i| i.starts_with("redis:"));
    let (redis_name, _) = service_by(services, is_redis);
    let (backend_name, backend) = demo_backend(services);
    let same_image = builds_our_image(backend) || backend["image"] == pollgate["image"];
    assert!(
        same_image,
        "the demo back end does not run the pollgate image"
    );
    let backend_argv = [vec!["pollgate".to_owned()], strings(&backend["command"])].concat();
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
    let depends_on_redis =
        !depends[redis_name].is_null() || strings(depends).iter().any(|d| d == redis_name);
    assert!(depends_on_redis, "pollgate does not depend on {redis_name}");

    // The mounts, where the running container sees them: start from the image's files.
    let image = image();
    let mounts = bind_mounts(pollgate);
    assert!(!mounts.is_empty(), "compose mounts no config into pollgate");
    image.mount(mounts.clone());
    let config_mount = mounts.iter().find(|(_, target)| *target == image.config);
    let config_mount =
        config_mount.expect("compose mounts no config file at the image's config path");

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
        cmd => serve_config(&[image.entrypoint.as_slice(), cmd].concat()),
    };
    let config = image.path(&config_path);
    let stdout = pollgate_check(&config, &env);
    assert!(stdout.contains(": ok ("), "{stdout}");
    let loaded = load(&config, &env);

    // Conversations in the redis service; approvals from the demo back end.
    let Store::Redis { server, .. } = &loaded.state.store else {
        panic!("the compose config keeps conversations in memory, not in {redis_name}")
    };
    assert_eq!(server.urls.len(), 1, "{server:?}");
    let url = reqwest::Url::parse(&server.urls[0]).unwrap();
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
    let (webhook, admin) = (loaded.server.listen, loaded.admin.listen);
    assert!(webhook.ip().is_unspecified() && admin.ip().is_unspecified());
    let on = |port: u16| {
        ports
            .iter()
            .filter(move |p| p.ends_with(&format!(":{port}")))
    };
    assert!(
        on(webhook.port()).next().is_some(),
        "webhook port {} not published: {ports:?}",
        webhook.port()
    );
    let admin_ports: Vec<&String> = on(admin.port()).collect();
    assert!(
        !admin_ports.is_empty() && admin_ports.iter().all(|p| p.starts_with("127.0.0.1:")),
        "the admin port {} should be published on the host's loopback \
         only: {ports:?}",
        admin.port()
    );
    // The healthcheck (the image's unless the service has its own) asks this admin listener.
    let healthcheck = match strings(&pollgate["healthcheck"]["test"]).as_slice() {
        [] => image.healthcheck.clone(),
        [kind, argv @ ..] if kind == "CMD" => argv.to_vec(),
        other => panic!("pollgate's healthcheck {other:?}: use [\"CMD\", \"pollgate\", ...]"),
    };
    assert_eq!(
        healthcheck_url(&healthcheck, &env),
        format!("http://127.0.0.1:{}/readyz", admin.port()),
        "pollgate's healthcheck in compose does not ask its admin listener's /readyz"
    );

    // The compose config is the shipped one but for `state`.
    let without_state = |text: &str| {
        let mut config: Value = serde_yaml::from_str(text).expect("compose config");
        config.as_mapping_mut().unwrap().remove("state");
        config
    };
    assert_eq!(
        without_state(&std::fs::read_to_string(&config_mount.0).unwrap()),
        without_state(&read("rules/pollgate.yaml")),
        "docker/compose/pollgate.yaml differs from rules/pollgate.yaml beyond `state`: keep them in step"
    );
}

#[test]
fn compose_builds_the_image_once_and_the_demo_back_end_runs_it() {
    let compose = compose();
    let services = &compose["services"];
    let pollgate = &services["pollgate"];
    let (backend_name, backend) = demo_backend(services);
    let named = pollgate["image"].as_str();
    let image = named.expect("the pollgate service names the image it builds (`image:`)");
    assert!(builds_our_image(pollgate));
    let runs = backend["image"].as_str();
    assert_eq!(
        runs,
        Some(image),
        "{backend_name} does not run the image the pollgate service builds"
    );
    assert!(
        backend["build"].is_null(),
        "{backend_name} builds the image a second time"
    );
    // The image is on no registry: `up` must not try to pull it for the demo back end.
    assert_eq!(backend["pull_policy"].as_str(), Some("never"));
    let builders = services
        .as_mapping()
        .unwrap()
        .values()
        .filter(|s| builds_our_image(s));
    assert_eq!(
        builders.count(),
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
    let lines = text.lines();
    let args = lines.filter_map(|l| Some(l.split_once("exec pollgate pollgate simulate")?.1));
    let argv = args.map(|a| format!("pollgate simulate {a}"));
    argv.map(|a| a.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_compose_simulate_example_pays_enough_to_reach_the_demo_back_end() {
    let examples = simulate_examples(&read("docker/compose.yaml"));
    assert_eq!(
        examples.len(),
        1,
        "one simulate example in docker/compose.yaml"
    );
    let readme = simulate_examples(&read("docker/README.md"));
    let other = "docker/README.md shows another simulate example than docker/compose.yaml";
    assert_eq!(readme, examples, "{other}");
    let Sub::Simulate(args) = parse_cli(&examples[0]) else {
        panic!("{:?} is not `pollgate simulate`", examples[0])
    };
    assert_eq!(args.event, "startPayment");
    let body = args.body.expect(
        "the example sends the default body (a 4.25 Cappuccino), which never reaches the back end",
    );

    // The container's files: the image's, then the pollgate service's mounts.
    let image = image();
    image.mount(bind_mounts(&compose()["services"]["pollgate"]));
    let body = image.path(&format!(
        "{}/{}",
        image.last().last("WORKDIR"),
        body.display()
    ));
    assert!(
        body.is_file(),
        "{}: the example's --body is not in the container",
        body.display()
    );

    // Through the container's config and rules: the body takes the approval path (one
    // forward to the back end, the till kept polling until the reply).
    let cases = image.fs.path().join("compose-example.yaml");
    std::fs::write(
        &cases,
        format!(
            "config: {}\ncases:\n  - name: the compose example's payment waits for the demo back end\n    event: startPayment\n    body_file: {}\n    upstreams:\n      approvals: {{status: 200, body: {{approved: true, manager: \"Sam\"}}, delay: 3s}}\n    forwards: {{approvals: 1}}\n    calls:\n      - expect: {{polling: {{finished: false}}}}\n      - after: 3s\n        expect: {{polling: {{finished: true, message: \"Approved by Sam\"}}}}\n",
            image.path(&image.config).display(),
            body.display()
        ),
    )
    .unwrap();
    let mut test = Command::new(env!("CARGO_BIN_EXE_pollgate"));
    let out = test.arg("test").arg(&cases).env_clear().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("1 passed, 0 failed\n"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
