//! The NVML inventory: real GPUs read through the NVIDIA Management Library.
//!
//! `nvml-wrapper` loads `libnvidia-ml.so.1` at run time, so this binary starts on machines
//! without the driver; [`NvmlInventory::init`] then fails with
//! [`InventoryError::NvmlUnavailable`], which says so plainly.
//!
//! # Health
//! A dedicated thread (NVML's event wait blocks) registers every GPU for critical XID and
//! double-bit ECC events and records them in a [`HealthTracker`]; XIDs that NVIDIA classes as
//! application errors are ignored (see [`convert::xid_is_fatal`]). A GPU is reported
//! unhealthy until no error has arrived for the recovery period. A GPU that cannot be queried
//! (e.g. fallen off the bus) is reported unhealthy with the query error as reason.
//!
//! # Caveats
//! - MIG: the MIG devices of a GPU in MIG mode are listed (UUID, memory, profile parsed from
//!   the name); the device plugin still advertises the parent GPU and memory slices of it.
//! - Memory `used` is `total - free`, which includes what the driver reserves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use autoglm_api::{GpuHealth, GpuStatus, HealthStatus, InventorySource, MigDevice, MigMode};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;

use super::convert;
use super::health::HealthTracker;
use super::{GpuInventory, InventoryError, InventorySnapshot};
use crate::allocations::{PodAllocation, gpu_allocations};

/// How long one NVML event wait blocks before the thread checks whether it should stop (ms).
const EVENT_WAIT_MS: u32 = 1000;

/// GPUs read through NVML.
pub struct NvmlInventory {
    nvml: Arc<Nvml>,
    health: Arc<Mutex<HealthTracker>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for NvmlInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlInventory").finish_non_exhaustive()
    }
}

impl NvmlInventory {
    /// Loads NVML and, when `watch_events` is true, starts the health-event thread. GPUs
    /// recover `recovery` after their last error.
    ///
    /// # Errors
    /// [`InventoryError::NvmlUnavailable`] when the library cannot be loaded or initialised.
    pub fn init(recovery: Duration, watch_events: bool) -> Result<Self, InventoryError> {
        let nvml =
            Arc::new(Nvml::init().map_err(|source| InventoryError::NvmlUnavailable { source })?);
        let health = Arc::new(Mutex::new(HealthTracker::new(recovery)));
        let stop = Arc::new(AtomicBool::new(false));
        if watch_events {
            let (nvml, health, stop) = (nvml.clone(), health.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name("nvml-events".into())
                .spawn(move || watch_events_loop(&nvml, &health, &stop));
            if let Err(error) = spawned {
                tracing::error!(%error, "failed to start the NVML event thread; XID/ECC health events are not watched");
            }
        }
        Ok(Self { nvml, health, stop })
    }

    fn read_gpu(&self, index: u32, now: Instant) -> Result<GpuStatus, InventoryError> {
        let q = |field: &'static str| {
            move |source: NvmlError| InventoryError::NvmlQuery {
                index,
                field,
                source,
            }
        };
        let device = self.nvml.device_by_index(index).map_err(q("handle"))?;
        let uuid = device.uuid().map_err(q("uuid"))?;
        let product_name = device.name().map_err(q("name"))?;
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .health(&uuid, now);
        let mut unhealthy = |what: &str, e: &NvmlError| {
            if matches!(e, NvmlError::GpuLost | NvmlError::Unknown) {
                health = GpuHealth {
                    status: HealthStatus::Unhealthy,
                    reason: Some(format!("failed to read {what}: {e}")),
                };
            }
        };
        let (memory_total_mib, memory_used_mib, memory_free_mib) = match device.memory_info() {
            Ok(m) => convert::memory_mib(m.total, m.free),
            Err(e) => {
                unhealthy("memory", &e);
                (0, 0, 0)
            }
        };
        let utilization = device.utilization_rates().ok();
        let compute_capability = device
            .cuda_compute_capability()
            .ok()
            .map(|c| convert::compute_capability(c.major, c.minor));
        let mig_mode = match device.mig_mode() {
            Ok(m) => convert::mig_mode(m.current),
            Err(_) => MigMode::Unsupported,
        };
        let mig_devices = if mig_mode == MigMode::Enabled {
            read_mig_devices(&device)
        } else {
            Vec::new()
        };
        let temperature_c = device
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .map(convert::temperature_c);
        let power_w = device.power_usage().ok().map(convert::milliwatts_to_watts);
        Ok(GpuStatus {
            index: i32::try_from(index).unwrap_or(i32::MAX),
            uuid,
            product_name,
            memory_total_mib,
            memory_used_mib,
            memory_free_mib,
            utilization_gpu_percent: utilization.as_ref().map(|u| convert::percent(u.gpu)),
            utilization_memory_percent: utilization.as_ref().map(|u| convert::percent(u.memory)),
            compute_capability,
            mig_mode,
            mig_devices,
            temperature_c,
            power_w,
            health,
            allocations: Vec::new(),
        })
    }
}

impl Drop for NvmlInventory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_mig_devices(device: &nvml_wrapper::Device<'_>) -> Vec<MigDevice> {
    let max = device.mig_device_count().unwrap_or(0);
    (0..max)
        .filter_map(|i| device.mig_device_by_index(i).ok())
        .filter_map(|mig| {
            let uuid = mig.uuid().ok()?;
            let memory_mib = mig
                .memory_info()
                .map(|m| convert::bytes_to_mib(m.total))
                .unwrap_or(0);
            let profile = mig
                .name()
                .ok()
                .and_then(|n| convert::mig_profile_from_name(&n));
            Some(MigDevice {
                uuid,
                profile,
                memory_mib,
                gpu_instance_id: None,
                compute_instance_id: None,
            })
        })
        .collect()
}

impl GpuInventory for NvmlInventory {
    fn source(&self) -> InventorySource {
        InventorySource::Nvml
    }

    fn snapshot(&self, allocations: &[PodAllocation]) -> Result<InventorySnapshot, InventoryError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|source| InventoryError::NvmlQuery {
                index: 0,
                field: "device count",
                source,
            })?;
        let now = Instant::now();
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let mut gpu = self.read_gpu(index, now)?;
            gpu.allocations = gpu_allocations(&gpu, allocations);
            gpus.push(gpu);
        }
        let cuda_version = self.nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        Ok(InventorySnapshot {
            source: InventorySource::Nvml,
            driver_version: self.nvml.sys_driver_version().ok(),
            cuda_version,
            gpus,
        })
    }
}

/// The events that make a GPU unhealthy.
fn health_events() -> EventTypes {
    EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR
}

/// Registers every GPU for health events and records them until `stop` is set.
fn watch_events_loop(nvml: &Nvml, health: &Mutex<HealthTracker>, stop: &AtomicBool) {
    let Ok(count) = nvml.device_count() else {
        tracing::error!("failed to count GPUs; NVML health events are not watched");
        return;
    };
    let mut set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(error) => {
            tracing::error!(%error, "failed to create an NVML event set; health events are not watched");
            return;
        }
    };
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let wanted = device
            .supported_event_types()
            .map(|s| s & health_events())
            .unwrap_or_else(|_| health_events());
        if wanted.is_empty() {
            tracing::warn!(
                index,
                "GPU supports no XID/ECC events; its health is not watched"
            );
            continue;
        }
        // `register_events` consumes the set and frees it on failure, so after a failure
        // there is no set left to wait on: health events are then not watched at all, which
        // is logged (GPUs that cannot be queried are still reported unhealthy).
        set = match device.register_events(wanted, set) {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(index, error = %error.error, "failed to register NVML health events; health events are not watched");
                return;
            }
        };
    }
    tracing::info!(gpus = count, "watching NVML XID and double-bit ECC events");
    while !stop.load(Ordering::Relaxed) {
        match set.wait(EVENT_WAIT_MS) {
            Ok(event) => {
                let uuid = event.device.uuid().unwrap_or_default();
                let reason = if event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    match event.event_data {
                        Some(XidError::Value(xid)) if !convert::xid_is_fatal(xid) => {
                            tracing::info!(%uuid, xid, "ignoring application XID");
                            continue;
                        }
                        Some(XidError::Value(xid)) => format!("XID {xid}"),
                        _ => "unknown XID".to_owned(),
                    }
                } else {
                    "double-bit ECC error".to_owned()
                };
                tracing::warn!(%uuid, %reason, "GPU error event; marking GPU unhealthy");
                health
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(&uuid, reason, Instant::now());
            }
            Err(NvmlError::Timeout) => {}
            Err(error) => {
                tracing::warn!(%error, "NVML event wait failed");
                std::thread::sleep(Duration::from_millis(u64::from(EVENT_WAIT_MS)));
            }
        }
    }
}
