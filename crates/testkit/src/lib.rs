//! Test support for integration tests against a REAL Kubernetes control plane.
//!
//! The control plane is etcd + kube-apiserver (optionally kube-scheduler,
//! kube-controller-manager and KWOK) built from pinned sources by `make tools` and started on
//! loopback by `e2e/cluster.sh up` (see the README, "Control plane"). It is not a mock:
//! admission, validation, server-side apply, watches and RBAC are the real ones.
//!
//! # Which cluster a test talks to
//! - `KUBECONFIG` set (e.g. after `eval "$(e2e/cluster.sh env)"`, or in CI against another
//!   cluster): that kubeconfig (its first path) is used. When it is the kubeconfig of our own
//!   state dir, `cluster.sh up` is still run (idempotent) so that requested components start.
//!   For any other cluster nothing is started; it must already provide what the test needs.
//! - `KUBECONFIG` unset: the first call in a process runs `e2e/cluster.sh up` (cheap when it is
//!   already up; safe against concurrent test binaries, the script holds a `flock`) and uses
//!   `<state dir>/kubeconfig`. The cluster is SHARED and LEFT RUNNING after the tests; stop it
//!   with `make cluster-down`.
//!
//! The state dir is `<checkout>/.cluster`, or `$AUTOGLM_CLUSTER_DIR` when set (the variable is
//! read by `cluster.sh` too). Component logs are in `<state dir>/logs/<component>.log`.
//!
//! # What the default control plane has (and has not)
//! - etcd + kube-apiserver with RBAC (`--authorization-mode=Node,RBAC`), the client of
//!   [`client`] is in group `system:masters` (cluster admin).
//! - kube-controller-manager is started by [`client`] and [`TestNamespace`] too (see
//!   [`DEFAULT_COMPONENTS`]): without its namespace and garbage-collector controllers a deleted
//!   namespace would stay `Terminating` forever and owner-reference cascades would never run.
//! - The `ServiceAccount` admission plugin is DISABLED: pods can be created in a fresh
//!   namespace without waiting for its `default` ServiceAccount, and no token is mounted.
//! - No kube-scheduler unless asked ([`ensure_components`] with [`Component::Scheduler`]):
//!   tests that need a pod placed either set `spec.nodeName` themselves or ask for it.
//! - No kubelet and no container runtime: pods on KWOK nodes ([`ensure_kwok`]) are marked
//!   Running by KWOK without running anything.
//!
//! # Example
//! ```no_run
//! # async fn demo() {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let ns = autoglm_testkit::TestNamespace::new("my-test").await;
//! let cms: kube::Api<ConfigMap> = ns.api();
//! // ... create objects in ns.name(); on panic the namespace state is dumped to stderr,
//! // and the namespace is deleted when `ns` is dropped.
//! let out = autoglm_testkit::kubectl(&["get", "configmaps", "-n", ns.name()]);
//! assert!(out.status.success());
//! # }
//! ```
//!
//! # Child processes
//! [`ChildGuard`] stops a process a test started (a controller, a development node) when it
//! is dropped, also on panic: `SIGTERM`, then `SIGKILL` after a grace period.
//!
//! # Panics
//! The plain functions ([`client`], [`kubeconfig_path`], [`TestNamespace::new`], ...) panic with
//! the full error (including `cluster.sh` output) because they are meant for tests; each has a
//! `try_` twin returning [`Error`].

pub mod process;

pub use process::ChildGuard;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use rand::Rng as _;

/// Environment variable overriding the control-plane state dir (default `<checkout>/.cluster`).
pub const STATE_DIR_ENV: &str = "AUTOGLM_CLUSTER_DIR";
/// Environment variable: when set to `1`, [`TestNamespace`] does not delete its namespace on
/// drop (for looking at what a test left behind).
pub const KEEP_NAMESPACES_ENV: &str = "AUTOGLM_KEEP_NAMESPACES";
/// Label put on every namespace made by [`TestNamespace`]; leftovers can be removed with
/// `kubectl delete namespace -l autoglm.test/namespace=true`.
pub const TEST_NAMESPACE_LABEL: &str = "autoglm.test/namespace";
/// Components that [`client`], [`kubeconfig_path`] and [`TestNamespace::new`] ensure besides
/// etcd and kube-apiserver.
pub const DEFAULT_COMPONENTS: &[Component] = &[Component::ControllerManager];

/// Errors of the test support functions. Each message names what failed to happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `e2e/cluster.sh` could not be executed at all.
    #[error("failed to run {script}: {source}")]
    SpawnClusterScript {
        /// Path of the script.
        script: PathBuf,
        /// The I/O error from spawning it.
        source: std::io::Error,
    },
    /// `e2e/cluster.sh up ...` exited non-zero.
    #[error(
        "failed to start the test control plane with `{command}` ({status}); \
         did `make tools` run? its output:\n{output}"
    )]
    StartControlPlane {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr.
        output: String,
    },
    /// The kubeconfig file could not be read or parsed.
    #[error("failed to read kubeconfig {path}: {source}")]
    ReadKubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// The parse or I/O error.
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig did not yield a client configuration.
    #[error("failed to build a client config from kubeconfig {path}: {source}")]
    BuildConfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// The error from kube.
        source: kube::config::KubeconfigError,
    },
    /// A [`Client`] could not be built from a [`Config`].
    #[error("failed to build a kube client: {0}")]
    BuildClient(#[source] kube::Error),
    /// The prefix given to [`TestNamespace::new`] breaks a rule.
    #[error("invalid test namespace prefix {prefix:?}: {rule}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The namespace could not be created.
    #[error("failed to create namespace {name}: {source}")]
    CreateNamespace {
        /// The namespace name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// A blocking helper task panicked or was cancelled.
    #[error("failed to wait for {what}: {source}")]
    Join {
        /// What was being waited for.
        what: &'static str,
        /// The join error.
        source: tokio::task::JoinError,
    },
}

/// An optional control-plane component, started by `e2e/cluster.sh up --with-<component>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// kube-scheduler (binds pods without `spec.nodeName` to nodes).
    Scheduler,
    /// kube-controller-manager (namespace deletion, garbage collection, ServiceAccounts and
    /// their tokens, Deployments/Jobs, node lifecycle, ...).
    ControllerManager,
    /// KWOK: manages fake Nodes (annotation `kwok.x-k8s.io/node: fake`), keeps them Ready and
    /// marks pods bound to them Running.
    Kwok,
}

impl Component {
    /// The `cluster.sh up` flag that starts this component.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Scheduler => "--with-scheduler",
            Self::ControllerManager => "--with-controller-manager",
            Self::Kwok => "--with-kwok",
        }
    }
}

/// The checkout root (the directory holding the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    // This crate lives at <root>/crates/testkit; the path is fixed at compile time.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `<checkout>/.tools/bin`, where `make tools` links kubectl, kube-apiserver, etcd, kwok, helm.
pub fn tools_bin() -> PathBuf {
    repo_root().join(".tools").join("bin")
}

/// The control-plane state dir: `$AUTOGLM_CLUSTER_DIR`, else `<checkout>/.cluster`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join(".cluster"),
    }
}

/// The kubeconfig that `cluster.sh up` writes (`<state dir>/kubeconfig`).
pub fn own_kubeconfig() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// `$KUBECONFIG`'s first entry, if set and non-empty.
fn env_kubeconfig() -> Option<PathBuf> {
    let value = std::env::var_os("KUBECONFIG")?;
    std::env::split_paths(&value).find(|p| !p.as_os_str().is_empty())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Components already ensured in this process (`None`: base control plane not yet ensured).
static ENSURED: Mutex<Option<BTreeSet<Component>>> = Mutex::new(None);

/// Makes sure the test control plane is up with at least `components`, and returns the path of
/// the kubeconfig to use. Blocking (runs `e2e/cluster.sh up`, seconds when warm; the first
/// ever start may build nothing but still takes a few seconds).
///
/// Called once per process per new component set; later calls return at once. With an
/// external `KUBECONFIG` (not our state dir's) nothing is started and `components` are
/// assumed present.
///
/// # Errors
/// [`Error::SpawnClusterScript`] or [`Error::StartControlPlane`] when `cluster.sh up` cannot
/// run or fails (its output is in the error).
pub fn try_ensure_components(components: &[Component]) -> Result<PathBuf, Error> {
    let own = own_kubeconfig();
    if let Some(external) = env_kubeconfig()
        && !same_file(&external, &own)
    {
        return Ok(external);
    }
    // A poisoned lock only means another test panicked while starting; the set is still valid.
    let mut ensured = ENSURED.lock().unwrap_or_else(|e| e.into_inner());
    let wanted: BTreeSet<Component> = components.iter().copied().collect();
    if let Some(have) = ensured.as_ref()
        && wanted.is_subset(have)
        && own.exists()
    {
        return Ok(own);
    }
    let mut all = ensured.clone().unwrap_or_default();
    all.extend(wanted);
    run_cluster_up(&all)?;
    *ensured = Some(all);
    Ok(own)
}

fn run_cluster_up(components: &BTreeSet<Component>) -> Result<(), Error> {
    let script = repo_root().join("e2e").join("cluster.sh");
    let mut cmd = Command::new(&script);
    cmd.arg("up");
    for c in components {
        cmd.arg(c.flag());
    }
    let command = format!(
        "{} up {}",
        script.display(),
        components
            .iter()
            .map(|c| c.flag())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::SpawnClusterScript {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::StartControlPlane {
            command,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Panicking form of [`try_ensure_components`].
///
/// # Panics
/// When the control plane cannot be started (the message carries `cluster.sh`'s output).
pub fn ensure_components(components: &[Component]) -> PathBuf {
    try_ensure_components(components).unwrap_or_else(|e| panic!("{e}"))
}

/// Path of the kubeconfig in use (for kubectl or a spawned binary), starting the control plane
/// with [`DEFAULT_COMPONENTS`] when needed.
///
/// # Panics
/// When the control plane cannot be started.
pub fn kubeconfig_path() -> PathBuf {
    ensure_components(DEFAULT_COMPONENTS)
}

/// Ensures KWOK runs for the test cluster (`cluster.sh up --with-kwok`; no-op for an external
/// `KUBECONFIG`). KWOK manages Nodes annotated `kwok.x-k8s.io/node: fake`: it keeps them
/// Ready (with node leases) and marks pods bound to them (`spec.nodeName`) Running.
///
/// # Errors
/// As [`try_ensure_components`].
pub async fn try_ensure_kwok() -> Result<(), Error> {
    let mut wanted = DEFAULT_COMPONENTS.to_vec();
    wanted.push(Component::Kwok);
    tokio::task::spawn_blocking(move || try_ensure_components(&wanted))
        .await
        .map_err(|source| Error::Join {
            what: "cluster.sh up --with-kwok",
            source,
        })??;
    Ok(())
}

/// Panicking form of [`try_ensure_kwok`].
///
/// # Panics
/// When KWOK cannot be started.
pub async fn ensure_kwok() {
    try_ensure_kwok().await.unwrap_or_else(|e| panic!("{e}"));
}

/// A [`Config`] for the test control plane (to tweak before building a client, e.g. set
/// `auth_info.impersonate` to act as a restricted user).
///
/// # Errors
/// Starting the control plane, or reading the kubeconfig.
pub async fn try_config() -> Result<Config, Error> {
    let path = tokio::task::spawn_blocking(|| try_ensure_components(DEFAULT_COMPONENTS))
        .await
        .map_err(|source| Error::Join {
            what: "cluster.sh up",
            source,
        })??;
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|source| Error::ReadKubeconfig {
        path: path.clone(),
        source,
    })?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::BuildConfig { path, source })
}

/// Panicking form of [`try_config`].
///
/// # Panics
/// When the control plane cannot be started or its kubeconfig read.
pub async fn config() -> Config {
    try_config().await.unwrap_or_else(|e| panic!("{e}"))
}

/// A client for the test control plane: `$KUBECONFIG` when set, otherwise the shared cluster
/// started by `e2e/cluster.sh up` (see the crate docs).
///
/// # Errors
/// As [`try_config`], or [`Error::BuildClient`].
pub async fn try_client() -> Result<Client, Error> {
    Client::try_from(try_config().await?).map_err(Error::BuildClient)
}

/// Panicking form of [`try_client`].
///
/// # Panics
/// When the control plane cannot be started or the client built.
pub async fn client() -> Client {
    try_client().await.unwrap_or_else(|e| panic!("{e}"))
}

/// The kubectl to run: `<checkout>/.tools/bin/kubectl` (pinned, from `make tools`), else the
/// first `kubectl` on `PATH`.
pub fn kubectl_path() -> PathBuf {
    let pinned = tools_bin().join("kubectl");
    if pinned.exists() {
        pinned
    } else {
        PathBuf::from("kubectl")
    }
}

/// Runs kubectl with the test kubeconfig and returns its [`Output`] (status, stdout, stderr).
///
/// # Panics
/// When the control plane cannot be started or kubectl cannot be spawned (not when kubectl
/// exits non-zero: check `status`).
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_stdin(args, "")
}

/// Like [`kubectl`], with `input` written to kubectl's stdin (e.g. `apply -f -`).
///
/// # Panics
/// As [`kubectl`].
pub fn kubectl_stdin(args: &[&str], input: &str) -> Output {
    run_kubectl(&kubeconfig_path(), args, input)
}

/// Runs kubectl with the test kubeconfig, panics with its stderr unless it exits 0, and returns
/// its stdout.
///
/// # Panics
/// As [`kubectl`], and when kubectl exits non-zero.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    let kubectl = kubectl_path();
    let mut child = Command::new(&kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", kubectl.display()));
    if let Some(mut stdin) = child.stdin.take() {
        // kubectl may exit before reading stdin (bad args); its stderr tells why, so a broken
        // pipe here is not the interesting error.
        let _ = stdin.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("failed to wait for {}: {e}", kubectl.display()))
}

/// The last `lines` lines of each component log in `<state dir>/logs/` (empty when the
/// cluster is external or has no logs).
pub fn component_log_tails(lines: usize) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(state_dir().join("logs")) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        let _ = writeln!(out, "----- {} (last {} lines)", path.display(), tail.len());
        for line in tail {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// A fresh namespace for one test, named `<prefix>-<6 random [a-z0-9]>` and labelled
/// [`TEST_NAMESPACE_LABEL`]`=true`.
///
/// On drop it is deleted (`kubectl delete namespace --wait=false`; kube-controller-manager
/// then removes its contents) unless `AUTOGLM_KEEP_NAMESPACES=1`. When dropped during a panic
/// (a failing test) it first prints [`TestNamespace::dump`] to stderr: events, every namespaced
/// object, pod descriptions and the component log tails.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
}

// kube 5's `Client` is not `Debug`; show the namespace and kubeconfig only.
impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates the namespace (starting the control plane if needed).
    ///
    /// `prefix`: 1..=50 chars of `[a-z0-9-]`, starting with a letter (the name must be a DNS
    /// label of at most 63 chars).
    ///
    /// # Errors
    /// [`Error::InvalidPrefix`], [`Error::CreateNamespace`], or starting the control plane.
    pub async fn try_new(prefix: &str) -> Result<Self, Error> {
        validate_prefix(prefix)?;
        let client = try_client().await?;
        let kubeconfig = try_ensure_components(DEFAULT_COMPONENTS)?;
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let name = format!("{prefix}-{suffix}");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| Error::CreateNamespace {
                name: name.clone(),
                source,
            })?;
        Ok(Self {
            name,
            client,
            kubeconfig,
        })
    }

    /// Panicking form of [`TestNamespace::try_new`].
    ///
    /// # Panics
    /// When the prefix is invalid or the namespace cannot be created.
    pub async fn new(prefix: &str) -> Self {
        Self::try_new(prefix)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A (cluster-admin) client for the test control plane.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An [`Api`] for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// The kubeconfig path in use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl with `-n <this namespace>` appended.
    ///
    /// # Panics
    /// As [`kubectl`].
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["-n", self.name.as_str()]);
        run_kubectl(&self.kubeconfig, &all, "")
    }

    /// A human-readable dump of the namespace: events, every namespaced object (including
    /// custom resources), pod descriptions, and the component log tails (40 lines each).
    pub fn dump(&self) -> String {
        let mut out = format!("===== state of test namespace {} =====\n", self.name);
        let mut section = |title: &str, args: &[&str]| {
            let o = run_kubectl(&self.kubeconfig, args, "");
            let _ = writeln!(out, "--- {title}");
            out.push_str(&String::from_utf8_lossy(&o.stdout));
            out.push_str(&String::from_utf8_lossy(&o.stderr));
        };
        section(
            "events",
            &[
                "get",
                "events",
                "-n",
                &self.name,
                "--sort-by=.metadata.creationTimestamp",
            ],
        );
        let kinds = run_kubectl(
            &self.kubeconfig,
            &[
                "api-resources",
                "--namespaced=true",
                "--verbs=list",
                "-o",
                "name",
            ],
            "",
        );
        let kinds: Vec<String> = String::from_utf8_lossy(&kinds.stdout)
            .lines()
            // Events are listed above; v1 Endpoints only add a deprecation warning
            // (EndpointSlices carry the same).
            .filter(|k| !matches!(*k, "" | "events" | "events.events.k8s.io" | "endpoints"))
            .map(str::to_owned)
            .collect();
        if !kinds.is_empty() {
            let list = kinds.join(",");
            section(
                "objects",
                &[
                    "get",
                    &list,
                    "-n",
                    &self.name,
                    "-o",
                    "wide",
                    "--ignore-not-found",
                    "--show-kind",
                ],
            );
        }
        section("pods (describe)", &["describe", "pods", "-n", &self.name]);
        out.push_str("--- component logs\n");
        out.push_str(&component_log_tails(40));
        out
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        if std::env::var_os(KEEP_NAMESPACES_ENV).is_some_and(|v| v == "1") {
            eprintln!(
                "keeping test namespace {} ({KEEP_NAMESPACES_ENV}=1)",
                self.name
            );
            return;
        }
        let out = run_kubectl(
            &self.kubeconfig,
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            "",
        );
        if !out.status.success() {
            eprintln!(
                "failed to delete test namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn validate_prefix(prefix: &str) -> Result<(), Error> {
    let rule = if prefix.is_empty() || prefix.len() > 50 {
        Some("must be 1 to 50 characters long")
    } else if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase letter a-z")
    } else if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("may contain only a-z, 0-9 and '-'")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(Error::InvalidPrefix {
            prefix: prefix.to_owned(),
            rule,
        }),
        None => Ok(()),
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`
/// (for integration tests waiting on the control plane).
///
/// # Panics
/// When `timeout` passes first.
pub async fn wait_for<T, F, Fut>(timeout: std::time::Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("api-crd-1").is_ok());
        for bad in ["", "Upper", "1abc", "has_underscore", &"a".repeat(51)] {
            assert!(
                matches!(validate_prefix(bad), Err(Error::InvalidPrefix { .. })),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn repo_root_holds_the_workspace() {
        assert!(repo_root().join("Cargo.toml").exists());
        assert!(repo_root().join("crates").join("testkit").exists());
    }

    #[test]
    fn component_flags() {
        assert_eq!(Component::Kwok.flag(), "--with-kwok");
        assert_eq!(Component::Scheduler.flag(), "--with-scheduler");
        assert_eq!(
            Component::ControllerManager.flag(),
            "--with-controller-manager"
        );
    }
}
