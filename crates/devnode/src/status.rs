//! The development node's model of one pod (its containers' states, restart counts, phase,
//! conditions) and its rendering as a Kubernetes `PodStatus` merge patch.
//!
//! Pure: no I/O, so the phase rules are unit-tested on their own.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code; `128 + signal` when killed by a signal (shell convention, as container
    /// runtimes report it).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed` (exit 0), `Error`, or a devnode-specific reason such as `ContainerLost`.
    pub reason: String,
    /// Optional detail.
    pub message: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// `devnode://<pid>`.
    pub container_id: String,
}

impl Terminated {
    /// A termination from an exit code / signal pair, with the conventional reason.
    #[must_use]
    pub fn from_exit(
        code: Option<i32>,
        signal: Option<i32>,
        started_at: DateTime<Utc>,
        container_id: String,
    ) -> Self {
        let exit_code = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
        Self {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: signal.map(|s| format!("killed by signal {s}")),
            started_at,
            finished_at: Utc::now(),
            container_id,
        }
    }
}

/// State of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running: not started yet, backing off, or impossible to start.
    Waiting {
        /// PascalCase reason (`ContainerCreating`, `CrashLoopBackOff`, `ErrImageNeverPull`, ...).
        reason: String,
        /// Detail.
        message: Option<String>,
    },
    /// The process runs.
    Running {
        /// Start time.
        started_at: DateTime<Utc>,
        /// Process id.
        pid: u32,
    },
    /// The process ended and will not be restarted (or not yet: see
    /// [`ContainerModel::restart_at`]).
    Terminated(Terminated),
}

/// One container as the development node tracks it.
#[derive(Debug, Clone)]
pub struct ContainerModel {
    /// Container name.
    pub name: String,
    /// Image reference from the spec.
    pub image: String,
    /// `devnode://<program path>` once resolved.
    pub image_id: String,
    /// Number of restarts so far.
    pub restart_count: i32,
    /// Current state.
    pub state: ContainerState,
    /// Previous termination (after a restart).
    pub last: Option<Terminated>,
    /// When a back-off restart is due; `Some` only while waiting in `CrashLoopBackOff`.
    pub restart_at: Option<Instant>,
}

impl ContainerModel {
    /// A container not started yet (`Waiting`/`ContainerCreating`).
    #[must_use]
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            restart_count: 0,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            last: None,
            restart_at: None,
        }
    }

    /// Whether the container has ended for good (terminated with no restart pending).
    #[must_use]
    pub fn finished(&self) -> bool {
        matches!(self.state, ContainerState::Terminated(_)) && self.restart_at.is_none()
    }

    /// Whether the process runs now.
    #[must_use]
    pub fn running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    fn status(&self) -> Value {
        let state = match &self.state {
            ContainerState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            ContainerState::Running { started_at, .. } => {
                json!({"running": {"startedAt": ts(started_at)}})
            }
            ContainerState::Terminated(t) => json!({"terminated": terminated(t)}),
        };
        let container_id = match &self.state {
            ContainerState::Running { pid, .. } => Some(format!("devnode://{pid}")),
            ContainerState::Terminated(t) => Some(t.container_id.clone()),
            ContainerState::Waiting { .. } => None,
        };
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.running(),
            "started": self.running(),
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last.as_ref().map_or(json!({}), |t| json!({"terminated": terminated(t)})),
        });
        if let Some(id) = container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn terminated(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": ts(&t.started_at),
        "finishedAt": ts(&t.finished_at),
        "containerID": t.container_id,
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    if let Some(m) = &t.message {
        v["message"] = json!(m);
    }
    v
}

/// Pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, containers not running yet.
    Pending,
    /// At least one container runs or is restarting.
    Running,
    /// Every container ended with exit code 0.
    Succeeded,
    /// Every container ended and at least one failed, or the pod could not run at all.
    Failed,
}

impl Phase {
    /// The API string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Whether the phase is final.
    #[must_use]
    pub fn terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// The phase implied by the main containers' states (the kubelet's rule): all finished ->
/// `Succeeded` if every exit code is 0, else `Failed`; any running or restarting ->
/// `Running`; otherwise `Pending`. Restart policy enters through
/// [`ContainerModel::restart_at`]: a container that will be restarted is not finished.
#[must_use]
pub fn phase_of(containers: &[ContainerModel]) -> Phase {
    if !containers.is_empty() && containers.iter().all(ContainerModel::finished) {
        let ok = containers
            .iter()
            .all(|c| matches!(&c.state, ContainerState::Terminated(t) if t.exit_code == 0));
        return if ok { Phase::Succeeded } else { Phase::Failed };
    }
    let started = containers.iter().any(|c| {
        c.running() || c.restart_at.is_some() || matches!(c.state, ContainerState::Terminated(_))
    });
    if started {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// The pod as the development node sees it.
#[derive(Debug, Clone)]
pub struct PodModel {
    /// Init containers, in order.
    pub init: Vec<ContainerModel>,
    /// Main containers.
    pub containers: Vec<ContainerModel>,
    /// Phase override for failures that are not a container's exit (unknown image,
    /// admission error, node shutdown); `None` means "derive from the containers".
    pub failed: Option<(String, String)>,
    /// Whether the init containers all succeeded.
    pub initialized: bool,
    /// Whether volumes and devices are ready (`PodReadyToStartContainers`).
    pub sandbox_ready: bool,
    /// When the node accepted the pod.
    pub start_time: DateTime<Utc>,
    /// Condition type -> (status, lastTransitionTime), so transitions keep their time.
    transitions: BTreeMap<&'static str, (bool, DateTime<Utc>)>,
}

impl PodModel {
    /// The model for a newly accepted pod.
    #[must_use]
    pub fn new(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let model = |c: &k8s_openapi::api::core::v1::Container| {
            ContainerModel::new(&c.name, c.image.as_deref().unwrap_or_default())
        };
        let init: Vec<ContainerModel> = spec
            .and_then(|s| s.init_containers.as_ref())
            .map(|v| v.iter().map(model).collect())
            .unwrap_or_default();
        Self {
            initialized: init.is_empty(),
            init,
            containers: spec
                .map(|s| s.containers.iter().map(model).collect())
                .unwrap_or_default(),
            failed: None,
            sandbox_ready: false,
            start_time: Utc::now(),
            transitions: BTreeMap::new(),
        }
    }

    /// The pod phase: [`Phase::Failed`] when [`PodModel::failed`] is set, otherwise from the
    /// main containers ([`phase_of`]), `Pending` while init containers run.
    #[must_use]
    pub fn phase(&self) -> Phase {
        if self.failed.is_some() {
            return Phase::Failed;
        }
        if !self.initialized {
            return Phase::Pending;
        }
        phase_of(&self.containers)
    }

    fn condition(&mut self, t: &'static str, status: bool) -> Value {
        let now = Utc::now();
        let entry = self.transitions.entry(t).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        json!({
            "type": t,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": ts(&entry.1),
        })
    }

    /// The `{"status": ...}` merge patch for the pod's `status` subresource. Lists
    /// (conditions, container statuses) are written whole, which is what a merge patch does
    /// with lists; `PodScheduled` is copied from `pod` (the binding set it).
    pub fn status_patch(&mut self, pod: &Pod, host_ip: &str) -> Value {
        let phase = self.phase();
        let ready = phase == Phase::Running && self.containers.iter().all(ContainerModel::running);
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or_else(|| json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(&self.start_time)}));
        let sandbox = self.sandbox_ready && !phase.terminal();
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("PodReadyToStartContainers", sandbox),
            self.condition("Initialized", initialized),
            self.condition("Ready", ready),
            self.condition("ContainersReady", ready),
            scheduled,
        ];
        let mut status = json!({
            "phase": phase.as_str(),
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": host_ip,
            "podIPs": [{"ip": host_ip}],
            "startTime": ts(&self.start_time),
            "conditions": conditions,
            "containerStatuses": self.containers.iter().map(ContainerModel::status).collect::<Vec<_>>(),
            "reason": null,
            "message": null,
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(
                self.init
                    .iter()
                    .map(ContainerModel::status)
                    .collect::<Vec<_>>()
            );
        }
        if let Some((reason, message)) = &self.failed {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        json!({ "status": status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> ContainerState {
        ContainerState::Terminated(Terminated::from_exit(
            Some(code),
            None,
            Utc::now(),
            "devnode://1".into(),
        ))
    }

    fn c(state: ContainerState, restart_pending: bool) -> ContainerModel {
        let mut m = ContainerModel::new("w", "img");
        m.state = state;
        m.restart_at = restart_pending.then(Instant::now);
        m
    }

    #[test]
    fn phase_rules() {
        let waiting = ContainerModel::new("w", "img");
        let running = c(
            ContainerState::Running {
                started_at: Utc::now(),
                pid: 7,
            },
            false,
        );
        assert_eq!(phase_of(std::slice::from_ref(&waiting)), Phase::Pending);
        assert_eq!(phase_of(std::slice::from_ref(&running)), Phase::Running);
        assert_eq!(phase_of(&[c(term(0), false)]), Phase::Succeeded);
        assert_eq!(phase_of(&[c(term(1), false)]), Phase::Failed);
        // Exit 137 with a restart pending (OnFailure/Always) keeps the pod Running.
        assert_eq!(phase_of(&[c(term(137), true)]), Phase::Running);
        assert_eq!(
            phase_of(&[c(term(0), false), running.clone()]),
            Phase::Running
        );
        assert_eq!(
            phase_of(&[c(term(0), false), c(term(2), false)]),
            Phase::Failed
        );
        assert_eq!(phase_of(&[]), Phase::Pending);
    }

    #[test]
    fn signal_exit_code_is_128_plus_signal() {
        let t = Terminated::from_exit(None, Some(9), Utc::now(), "devnode://1".into());
        assert_eq!(t.exit_code, 137);
        assert_eq!(t.reason, "Error");
        let t = Terminated::from_exit(Some(0), None, Utc::now(), "devnode://1".into());
        assert_eq!(t.reason, "Completed");
    }

    #[test]
    fn status_patch_reports_failure_reason_and_container_states() {
        let pod = Pod::default();
        let mut m = PodModel {
            containers: vec![ContainerModel::new("worker", "busybox")],
            ..PodModel::new(&pod)
        };
        m.containers[0].state = ContainerState::Waiting {
            reason: "ErrImageNeverPull".into(),
            message: Some("unknown image".into()),
        };
        m.failed = Some(("ErrImageNeverPull".into(), "unknown image".into()));
        let p = m.status_patch(&pod, "127.0.0.1");
        let s = &p["status"];
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["reason"], "ErrImageNeverPull");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImageNeverPull"
        );
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        let types: Vec<&str> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
    }

    #[test]
    fn running_pod_is_ready_with_container_id() {
        let pod = Pod::default();
        let mut m = PodModel::new(&pod);
        m.containers = vec![ContainerModel::new("worker", "img")];
        m.containers[0].state = ContainerState::Running {
            started_at: Utc::now(),
            pid: 4242,
        };
        m.containers[0].restart_count = 1;
        m.containers[0].last = Some(Terminated::from_exit(
            None,
            Some(9),
            Utc::now(),
            "devnode://4000".into(),
        ));
        let p = m.status_patch(&pod, "127.0.0.1");
        let cs = &p["status"]["containerStatuses"][0];
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(cs["containerID"], "devnode://4242");
        assert_eq!(cs["restartCount"], 1);
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 137);
        assert_eq!(cs["ready"], true);
    }
}
