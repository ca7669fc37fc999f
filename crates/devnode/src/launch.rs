//! Turning one container of a Pod into a local process description ([`LaunchSpec`]): the
//! program (from the [`ImageMap`]), its arguments, its environment and its working directory,
//! with container paths rewritten to the local directories that stand in for the volumes.
//!
//! Pure: everything fetched from the API (ConfigMaps, Secrets) or from the device plugin is
//! passed in through [`LaunchContext`], so the rules are unit-tested without a cluster.
//!
//! # Caveats
//! There is no filesystem isolation. A container path such as `/data/in.txt` only reaches the
//! process because arguments and environment values that start with a volume's `mountPath`
//! are rewritten to the local directory (`/data` -> `<state>/pods/<uid>/volumes/data`); paths
//! the program builds itself from other pieces are not rewritten. `readOnly` mounts are not
//! enforced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use crate::image::{ImageMap, UNKNOWN_IMAGE_REASON};

/// Container `waiting.reason` for a container whose configuration cannot be realised
/// (unsupported env source, missing ConfigMap key, a command that is not the entrypoint). The
/// kubelet uses the same reason for the same class of problem.
pub const CONFIG_ERROR_REASON: &str = "CreateContainerConfigError";

/// Everything outside the Pod object that decides how a container is launched.
#[derive(Debug, Clone, Default)]
pub struct LaunchContext {
    /// Known images and their local programs.
    pub images: ImageMap,
    /// Pod volume name -> local directory (or file) standing in for it.
    pub volumes: BTreeMap<String, PathBuf>,
    /// Environment returned by the device plugins' `Allocate` for this container.
    pub device_env: BTreeMap<String, String>,
    /// Mounts returned by `Allocate`: container path -> host path.
    pub device_mounts: Vec<(String, PathBuf)>,
    /// Environment inherited from the development node (PATH, LD_LIBRARY_PATH, KUBECONFIG, ...),
    /// applied first so the container's own `env` overrides it.
    pub base_env: BTreeMap<String, String>,
    /// ConfigMaps of the pod's namespace referenced by the container: name -> data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets of the pod's namespace referenced by the container: name -> decoded data.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Address reported as `status.hostIP` and `status.podIP` (processes share the host
    /// network).
    pub host_ip: String,
    /// Per-pod scratch directory; the working directory when the container sets none.
    pub pod_dir: PathBuf,
}

/// A container as a local process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Executable to start.
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Complete environment (the process inherits nothing else).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// Why a container cannot be launched; becomes the container's `waiting` state and, for a
/// pod that cannot run at all, the pod's `Failed` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// No image rule matches.
    #[error(
        "image {image:?} of container {container:?} is not known to the development node \
         (it runs only images mapped with --image PATTERN=PROGRAM, e.g. the worker image); \
         nothing was started"
    )]
    UnknownImage {
        /// Container name.
        container: String,
        /// The image reference.
        image: String,
    },
    /// `command[0]` is not the mapped program.
    #[error(
        "container {container:?}: command[0] {command:?} is not the entrypoint of its image \
         ({program:?}); the development node can only run the mapped program"
    )]
    UnsupportedCommand {
        /// Container name.
        container: String,
        /// The `command[0]` given.
        command: String,
        /// File name of the mapped program.
        program: String,
    },
    /// An env var cannot be resolved.
    #[error("container {container:?}: env var {name:?}: {reason}")]
    Env {
        /// Container name.
        container: String,
        /// The variable (or `envFrom` source) name.
        name: String,
        /// What is wrong, e.g. `fieldRef "spec.foo" is not supported`.
        reason: String,
    },
    /// A volumeMount names a volume with no local directory.
    #[error(
        "container {container:?}: volumeMount {mount_path:?} refers to volume {volume:?}, which has no local directory"
    )]
    MissingVolume {
        /// Container name.
        container: String,
        /// The mount's `mountPath`.
        mount_path: String,
        /// The mount's `name`.
        volume: String,
    },
}

impl LaunchError {
    /// The `waiting.reason` for this error: [`UNKNOWN_IMAGE_REASON`] for an unknown image,
    /// [`CONFIG_ERROR_REASON`] otherwise.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownImage { .. } => UNKNOWN_IMAGE_REASON,
            _ => CONFIG_ERROR_REASON,
        }
    }
}

/// Builds the [`LaunchSpec`] of `container` (one of `pod`'s containers).
///
/// Kubernetes semantics kept: `command` replaces the entrypoint and `args` follow it;
/// `$(VAR)` in `command`, `args` and `env` values expands to earlier-defined variables
/// (`$$` escapes, unknown references stay literal); `envFrom` first, then `env`, later entries
/// winning.
///
/// # Errors
/// [`LaunchError`] when the image is unknown, `command[0]` is not the mapped program, an env
/// source cannot be resolved or a mount names a volume without a local directory.
pub fn build_launch(
    pod: &Pod,
    container: &Container,
    ctx: &LaunchContext,
) -> Result<LaunchSpec, LaunchError> {
    let image = container.image.clone().unwrap_or_default();
    let program = ctx
        .images
        .resolve(&image)
        .ok_or_else(|| LaunchError::UnknownImage {
            container: container.name.clone(),
            image: image.clone(),
        })?
        .to_path_buf();

    let mounts = mount_table(container, ctx)?;

    let mut env = ctx.base_env.clone();
    env.insert(
        "HOSTNAME".to_owned(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    env.extend(ctx.device_env.clone());
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what) = if let Some(cm) = &from.config_map_ref {
            (
                ctx.config_maps.get(&cm.name),
                ("ConfigMap", &cm.name, cm.optional),
            )
        } else if let Some(s) = &from.secret_ref {
            (ctx.secrets.get(&s.name), ("Secret", &s.name, s.optional))
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    env.insert(format!("{prefix}{k}"), v.clone());
                }
            }
            None if what.2 == Some(true) => {}
            None => {
                return Err(LaunchError::Env {
                    container: container.name.clone(),
                    name: format!("envFrom {} {}", what.0, what.1),
                    reason: format!("{} {:?} not found", what.0, what.1),
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = resolve_env_var(pod, container, var, &env, ctx)? {
            env.insert(var.name.clone(), map_path(&value, &mounts));
        }
    }

    let mut args: Vec<String> = Vec::new();
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        let want = program
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let got = Path::new(&command[0])
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if got != want {
            return Err(LaunchError::UnsupportedCommand {
                container: container.name.clone(),
                command: command[0].clone(),
                program: want,
            });
        }
        args.extend(command[1..].iter().cloned());
    }
    args.extend(container.args.iter().flatten().cloned());
    let args = args
        .iter()
        .map(|a| map_path(&expand_vars(a, &env), &mounts))
        .collect();

    let cwd = container
        .working_dir
        .as_deref()
        .map(|w| PathBuf::from(map_path(w, &mounts)))
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| ctx.pod_dir.clone());

    Ok(LaunchSpec {
        program,
        args,
        env,
        cwd,
    })
}

/// Container path -> local path for every volumeMount and device-plugin mount, longest
/// container path first so that nested mounts win.
fn mount_table(
    container: &Container,
    ctx: &LaunchContext,
) -> Result<Vec<(String, PathBuf)>, LaunchError> {
    let mut table: Vec<(String, PathBuf)> = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let dir = ctx
            .volumes
            .get(&m.name)
            .ok_or_else(|| LaunchError::MissingVolume {
                container: container.name.clone(),
                mount_path: m.mount_path.clone(),
                volume: m.name.clone(),
            })?;
        let local = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        table.push((m.mount_path.trim_end_matches('/').to_owned(), local));
    }
    table.extend(
        ctx.device_mounts
            .iter()
            .map(|(c, h)| (c.trim_end_matches('/').to_owned(), h.clone())),
    );
    table.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    Ok(table)
}

/// Rewrites a container path to its local path: `value` itself, or the part after the first
/// `=` (for `--flag=/path`), when it equals a mount path or lies below one. Other values are
/// returned unchanged.
#[must_use]
pub fn map_path(value: &str, table: &[(String, PathBuf)]) -> String {
    let rewrite = |v: &str| -> Option<String> {
        table.iter().find_map(|(cpath, local)| {
            if cpath.is_empty() {
                return None;
            }
            if v == cpath {
                Some(local.to_string_lossy().into_owned())
            } else {
                v.strip_prefix(cpath.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| local.join(rest).to_string_lossy().into_owned())
            }
        })
    };
    if let Some(mapped) = rewrite(value) {
        return mapped;
    }
    if let Some((key, rest)) = value.split_once('=')
        && let Some(mapped) = rewrite(rest)
    {
        return format!("{key}={mapped}");
    }
    value.to_owned()
}

/// Kubernetes `$(VAR)` expansion: `$(NAME)` becomes the value of `NAME` in `env`, `$$`
/// becomes `$`, a reference to an unknown variable is kept as written.
///
/// # Source
/// `k8s.io/kubernetes/third_party/forked/golang/expansion` (the kubelet's expansion rules).
#[must_use]
pub fn expand_vars(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of one `env` entry; `None` for an optional reference that is absent.
fn resolve_env_var(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    env_so_far: &BTreeMap<String, String>,
    ctx: &LaunchContext,
) -> Result<Option<String>, LaunchError> {
    let err = |reason: String| LaunchError::Env {
        container: container.name.clone(),
        name: var.name.clone(),
        reason,
    };
    if let Some(value) = &var.value {
        return Ok(Some(expand_vars(value, env_so_far)));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(field) = &from.field_ref {
        return field_ref(pod, &field.field_path, &ctx.host_ip)
            .map(Some)
            .ok_or_else(|| err(format!("fieldRef {:?} is not supported", field.field_path)));
    }
    if let Some(res) = &from.resource_field_ref {
        let target = match res.container_name.as_deref().filter(|n| !n.is_empty()) {
            None => container,
            Some(name) => pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == name))
                .ok_or_else(|| err(format!("resourceFieldRef names unknown container {name:?}")))?,
        };
        return resource_field_ref(
            target,
            &res.resource,
            res.divisor.as_ref().map(|d| d.0.as_str()),
        )
        .map(Some)
        .map_err(err);
    }
    let lookup = |kind: &str,
                  maps: &BTreeMap<String, BTreeMap<String, String>>,
                  name: &str,
                  key: &str,
                  optional: Option<bool>| {
        match maps.get(name).and_then(|d| d.get(key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional == Some(true) => Ok(None),
            None => Err(err(format!("key {key:?} of {kind} {name:?} not found"))),
        }
    };
    if let Some(r) = &from.config_map_key_ref {
        return lookup("ConfigMap", &ctx.config_maps, &r.name, &r.key, r.optional);
    }
    if let Some(r) = &from.secret_key_ref {
        return lookup("Secret", &ctx.secrets, &r.name, &r.key, r.optional);
    }
    Err(err("valueFrom has no supported source (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef)".to_owned()))
}

/// Downward-API `fieldRef` paths the kubelet supports for env vars.
fn field_ref(pod: &Pod, path: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracketed = |prefix: &str| -> Option<String> {
        let inner = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(inner.to_owned())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs" => host_ip.to_owned(),
        _ => {
            if let Some(key) = bracketed("metadata.labels['") {
                meta.labels.as_ref()?.get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = bracketed("metadata.annotations['") {
                meta.annotations
                    .as_ref()?
                    .get(&key)
                    .cloned()
                    .unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// `resourceFieldRef` for `limits.cpu|memory` / `requests.cpu|memory` (cpu rounded up to whole
/// cores, memory in bytes, as the kubelet does with the default divisor `1`) and any other
/// resource's quantity as written.
fn resource_field_ref(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    if divisor.is_some_and(|d| d != "1") {
        return Err(format!(
            "resourceFieldRef {resource:?}: only divisor \"1\" is supported, got {divisor:?}"
        ));
    }
    let (section, name) = resource.split_once('.').ok_or_else(|| {
        format!("resourceFieldRef {resource:?} must be limits.<name> or requests.<name>")
    })?;
    let res = container.resources.as_ref();
    let map = match section {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => {
            return Err(format!(
                "resourceFieldRef {resource:?} must be limits.<name> or requests.<name>"
            ));
        }
    };
    let Some(q) = map.and_then(|m| m.get(name)) else {
        // The kubelet falls back to node allocatable; "0" keeps the variable defined.
        return Ok("0".to_owned());
    };
    match name {
        "cpu" => parse_cpu_millis(&q.0)
            .map(|m| m.div_ceil(1000).to_string())
            .ok_or_else(|| format!("resourceFieldRef {resource:?}: cannot parse cpu {:?}", q.0)),
        "memory" => parse_bytes(&q.0).map(|b| b.to_string()).ok_or_else(|| {
            format!(
                "resourceFieldRef {resource:?}: cannot parse memory {:?}",
                q.0
            )
        }),
        _ => Ok(q.0.clone()),
    }
}

/// CPU quantity (`"2"`, `"500m"`, `"1.5"`) in millicores.
fn parse_cpu_millis(q: &str) -> Option<u64> {
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    let cores: f64 = q.parse().ok()?;
    (cores >= 0.0).then(|| (cores * 1000.0).ceil() as u64)
}

/// Memory quantity (`"512Mi"`, `"1G"`, `"1024"`) in bytes.
fn parse_bytes(q: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(mult);
        }
    }
    q.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageRule;
    use k8s_openapi::api::core::v1::{
        EnvVarSource, ObjectFieldSelector, PodSpec, ResourceRequirements, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("job-r0".into()),
                namespace: Some("demo".into()),
                uid: Some("u-1".into()),
                labels: Some([("autoglm.io/job".to_owned(), "job".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("devnode-a".into()),
                containers: vec![container],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ctx() -> LaunchContext {
        LaunchContext {
            images: ImageMap::new(vec![
                ImageRule::parse("*open-autoglm/*worker*=/opt/bin/autoglm-worker").unwrap(),
            ]),
            volumes: [(
                "data".to_owned(),
                PathBuf::from("/tmp/pods/u-1/volumes/data"),
            )]
            .into(),
            host_ip: "127.0.0.1".into(),
            pod_dir: PathBuf::from("/tmp/pods/u-1"),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn worker() -> Container {
        Container {
            name: "worker".into(),
            image: Some("open-autoglm/autoglm-worker:0.1.0".into()),
            command: Some(vec!["/usr/local/bin/autoglm-worker".into()]),
            args: Some(vec![
                "run".into(),
                "--input=/data/in.txt".into(),
                "--output".into(),
                "/data/out".into(),
                "--replica".into(),
                "$(POD_NAME)".into(),
                "$$(POD_NAME)".into(),
            ]),
            env: Some(vec![
                field("POD_NAME", "metadata.name"),
                field("POD_NAMESPACE", "metadata.namespace"),
                field("NODE", "spec.nodeName"),
                field("JOB", "metadata.labels['autoglm.io/job']"),
                EnvVar {
                    name: "CACHE".into(),
                    value: Some("/data/cache".into()),
                    ..Default::default()
                },
            ]),
            volume_mounts: Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn worker_container_maps_program_args_env_and_paths() {
        let c = worker();
        let spec = build_launch(&pod(c.clone()), &c, &ctx()).unwrap();
        assert_eq!(spec.program, PathBuf::from("/opt/bin/autoglm-worker"));
        assert_eq!(
            spec.args,
            vec![
                "run",
                "--input=/tmp/pods/u-1/volumes/data/in.txt",
                "--output",
                "/tmp/pods/u-1/volumes/data/out",
                "--replica",
                "job-r0",
                "$(POD_NAME)",
            ]
        );
        assert_eq!(spec.env["POD_NAME"], "job-r0");
        assert_eq!(spec.env["POD_NAMESPACE"], "demo");
        assert_eq!(spec.env["NODE"], "devnode-a");
        assert_eq!(spec.env["JOB"], "job");
        assert_eq!(spec.env["HOSTNAME"], "job-r0");
        assert_eq!(spec.env["CACHE"], "/tmp/pods/u-1/volumes/data/cache");
        assert_eq!(spec.cwd, PathBuf::from("/tmp/pods/u-1"));
    }

    #[test]
    fn unknown_image_is_an_error_with_never_pull_reason() {
        let mut c = worker();
        c.image = Some("busybox:1.36".into());
        let err = build_launch(&pod(c.clone()), &c, &ctx()).unwrap_err();
        assert_eq!(err.reason(), "ErrImageNeverPull");
        assert!(err.to_string().contains("busybox:1.36"), "{err}");
    }

    #[test]
    fn foreign_command_is_rejected() {
        let mut c = worker();
        c.command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
        let err = build_launch(&pod(c.clone()), &c, &ctx()).unwrap_err();
        assert_eq!(err.reason(), CONFIG_ERROR_REASON);
        assert!(matches!(err, LaunchError::UnsupportedCommand { .. }));
    }

    #[test]
    fn device_env_is_applied_and_container_env_wins() {
        let mut c = worker();
        c.env.as_mut().unwrap().push(EnvVar {
            name: "OVERRIDE".into(),
            value: Some("from-spec".into()),
            ..Default::default()
        });
        let mut cx = ctx();
        cx.device_env = [
            ("NVIDIA_VISIBLE_DEVICES".to_owned(), "GPU-1".to_owned()),
            ("OVERRIDE".to_owned(), "from-plugin".to_owned()),
        ]
        .into();
        cx.device_mounts = vec![("/dev/shm/gpu".into(), PathBuf::from("/tmp/gpu0"))];
        let spec = build_launch(&pod(c.clone()), &c, &cx).unwrap();
        assert_eq!(spec.env["NVIDIA_VISIBLE_DEVICES"], "GPU-1");
        assert_eq!(spec.env["OVERRIDE"], "from-spec");
    }

    #[test]
    fn unsupported_field_ref_names_the_variable() {
        let mut c = worker();
        c.env = Some(vec![field("X", "spec.priority")]);
        let err = build_launch(&pod(c.clone()), &c, &ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"worker\": env var \"X\": fieldRef \"spec.priority\" is not supported"
        );
    }

    #[test]
    fn missing_volume_is_an_error() {
        let mut c = worker();
        c.volume_mounts.as_mut().unwrap()[0].name = "nope".into();
        let err = build_launch(&pod(c.clone()), &c, &ctx()).unwrap_err();
        assert!(matches!(err, LaunchError::MissingVolume { .. }));
    }

    #[test]
    fn resource_field_ref_rounds_cpu_up_and_reports_bytes() {
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_owned(), Quantity("1500m".into())),
                        ("memory".to_owned(), Quantity("2Gi".into())),
                        ("autoglm.io/gpu".to_owned(), Quantity("1".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(resource_field_ref(&c, "limits.cpu", None).unwrap(), "2");
        assert_eq!(
            resource_field_ref(&c, "limits.memory", None).unwrap(),
            "2147483648"
        );
        assert_eq!(
            resource_field_ref(&c, "limits.autoglm.io/gpu", None).unwrap(),
            "1"
        );
        assert_eq!(resource_field_ref(&c, "requests.cpu", None).unwrap(), "0");
        assert!(resource_field_ref(&c, "limits.cpu", Some("1m")).is_err());
    }

    #[test]
    fn expansion_rules() {
        let env: BTreeMap<String, String> = [("A".to_owned(), "x".to_owned())].into();
        assert_eq!(expand_vars("$(A)-$(B)-$$(A)-$-$", &env), "x-$(B)-$(A)-$-$");
        assert_eq!(expand_vars("$(A", &env), "$(A");
    }

    #[test]
    fn map_path_prefers_longest_mount_and_ignores_lookalikes() {
        let table = vec![
            ("/data/models".to_owned(), PathBuf::from("/m")),
            ("/data".to_owned(), PathBuf::from("/d")),
        ];
        assert_eq!(map_path("/data/models/x", &table), "/m/x");
        assert_eq!(map_path("/data/x", &table), "/d/x");
        assert_eq!(map_path("/data", &table), "/d");
        assert_eq!(map_path("/database", &table), "/database");
        assert_eq!(map_path("--out=/data/o", &table), "--out=/d/o");
        assert_eq!(map_path("relative", &table), "relative");
    }
}
