//! Pure conversions from NVML-shaped values (what the NVML C API returns) to the units the
//! `GpuNode` status publishes. Kept free of NVML so each one is unit-tested with recorded
//! values from real GPUs.

/// Bytes in one MiB.
pub const BYTES_PER_MIB: u64 = 1024 * 1024;

/// Converts a byte count (NVML `nvmlMemory_t` fields are bytes) to whole MiB, rounding down,
/// as `nvidia-smi` does.
///
/// # Source
/// NVML API reference, `nvmlMemory_t`: "total, free, used: ... memory (in bytes)".
#[must_use]
pub fn bytes_to_mib(bytes: u64) -> i64 {
    // u64::MAX / 2^20 < i64::MAX, so the cast cannot wrap.
    i64::try_from(bytes / BYTES_PER_MIB).unwrap_or(i64::MAX)
}

/// Memory figures of one GPU in MiB: `(total, used, free)`.
///
/// NVML reports `total = free + used + reserved` on recent drivers (the v2 struct has a
/// `reserved` field; the v1 struct folds it into `used`). We publish `used` as
/// `total - free` so the three figures always add up and the memory reserved by the driver
/// counts as not available to workloads.
#[must_use]
pub fn memory_mib(total_bytes: u64, free_bytes: u64) -> (i64, i64, i64) {
    let total = bytes_to_mib(total_bytes);
    let free = bytes_to_mib(free_bytes.min(total_bytes));
    (total, total - free, free)
}

/// Clamps an NVML utilization sample (`nvmlUtilization_t.gpu` / `.memory`, percent of time
/// over the last sample period) to 0..=100; some drivers report transient values above 100.
#[must_use]
pub fn percent(value: u32) -> i32 {
    // value.min(100) <= 100 fits i32.
    value.min(100) as i32
}

/// Formats a CUDA compute capability as `major.minor` (e.g. `(9, 0)` -> `"9.0"`, the H100;
/// `(8, 6)` -> `"8.6"`, the A10/RTX 30xx).
#[must_use]
pub fn compute_capability(major: i32, minor: i32) -> String {
    format!("{major}.{minor}")
}

/// Converts NVML's power reading (`nvmlDeviceGetPowerUsage`, milliwatts) to watts, rounded to
/// 0.1 W.
#[must_use]
pub fn milliwatts_to_watts(milliwatts: u32) -> f64 {
    (f64::from(milliwatts) / 100.0).round() / 10.0
}

/// Converts NVML's temperature (`nvmlDeviceGetTemperature`, whole degrees Celsius) to the
/// published integer.
#[must_use]
pub fn temperature_c(celsius: u32) -> i32 {
    i32::try_from(celsius).unwrap_or(i32::MAX)
}

/// MIG mode from NVML's `nvmlDeviceGetMigMode` `current` value: `1` is
/// `NVML_DEVICE_MIG_ENABLE`, `0` is `NVML_DEVICE_MIG_DISABLE`.
#[must_use]
pub fn mig_mode(current: u32) -> autoglm_api::MigMode {
    if current == 1 {
        autoglm_api::MigMode::Enabled
    } else {
        autoglm_api::MigMode::Disabled
    }
}

/// The MIG profile from a MIG device's NVML name, e.g.
/// `"NVIDIA A100-SXM4-40GB MIG 1g.5gb"` -> `Some("1g.5gb")`; `None` when the name carries
/// no ` MIG ` part.
#[must_use]
pub fn mig_profile_from_name(name: &str) -> Option<String> {
    let (_, profile) = name.rsplit_once(" MIG ")?;
    let profile = profile.trim();
    (!profile.is_empty()).then(|| profile.to_owned())
}

/// GPU-feature-discovery style label value for a product name: spaces become `-` and any
/// character a label value may not hold is dropped, truncated to 63 characters
/// (e.g. `"NVIDIA H100 80GB HBM3"` -> `"NVIDIA-H100-80GB-HBM3"`).
///
/// # Source
/// Kubernetes label values: at most 63 characters, `[A-Za-z0-9]` at both ends,
/// `-`, `_`, `.` and alphanumerics between.
#[must_use]
pub fn product_label_value(product: &str) -> String {
    let mapped: String = product
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => Some(c),
            _ => None,
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// XIDs that NVIDIA's own device plugin treats as application errors rather than hardware
/// faults (a user kernel crashed, was killed or hit a page fault): they do not make a GPU
/// unhealthy.
///
/// # Source
/// NVIDIA k8s-device-plugin, `internal/rm/health.go` (`applicationErrorXids`: 13, 31, 43, 45,
/// 68, 109), and NVIDIA's XID catalogue.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Whether a critical XID event marks the GPU unhealthy (every XID except the
/// [`APPLICATION_XIDS`]).
#[must_use]
pub fn xid_is_fatal(xid: u64) -> bool {
    !APPLICATION_XIDS.contains(&xid)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from `nvidia-smi -q -d MEMORY` / nvmlDeviceGetMemoryInfo on real GPUs.
    #[test]
    fn memory_of_an_h100_80gb() {
        // H100 80GB HBM3: total 85_520_809_984 bytes = 81_559 MiB exactly
        // (81_559 * 1_048_576 = 85_520_809_984); free 84_893_171_712 bytes = 80_960.44 MiB.
        let (total, used, free) = memory_mib(85_520_809_984, 84_893_171_712);
        assert_eq!(total, 81_559);
        assert_eq!(free, 80_960);
        assert_eq!(used, 599);
    }

    #[test]
    fn memory_of_a_t4() {
        // Tesla T4: total 16_106_127_360 bytes = 15_360 MiB; free 15_727_656_960 = 14_999.06.
        let (total, used, free) = memory_mib(16_106_127_360, 15_727_656_960);
        assert_eq!((total, used, free), (15_360, 361, 14_999));
    }

    #[test]
    fn bytes_to_mib_rounds_down() {
        assert_eq!(bytes_to_mib(0), 0);
        assert_eq!(bytes_to_mib(1_048_575), 0);
        assert_eq!(bytes_to_mib(1_048_576), 1);
        assert_eq!(bytes_to_mib(3 * 1_048_576 + 1), 3);
        assert_eq!(bytes_to_mib(u64::MAX), 17_592_186_044_415);
    }

    #[test]
    fn free_above_total_is_clamped() {
        assert_eq!(memory_mib(1_048_576, 2_097_152), (1, 0, 1));
    }

    #[test]
    fn utilization_percentages() {
        assert_eq!(percent(0), 0);
        assert_eq!(percent(37), 37);
        assert_eq!(percent(100), 100);
        assert_eq!(percent(104), 100);
    }

    #[test]
    fn compute_capability_strings() {
        assert_eq!(compute_capability(9, 0), "9.0"); // H100 / H200
        assert_eq!(compute_capability(8, 0), "8.0"); // A100
        assert_eq!(compute_capability(8, 6), "8.6"); // A10
        assert_eq!(compute_capability(7, 5), "7.5"); // T4
        assert_eq!(compute_capability(12, 0), "12.0"); // Blackwell RTX
    }

    #[test]
    fn power_in_watts() {
        assert_eq!(milliwatts_to_watts(71_234), 71.2);
        assert_eq!(milliwatts_to_watts(699_950), 700.0);
        assert_eq!(milliwatts_to_watts(0), 0.0);
    }

    #[test]
    fn temperature_in_celsius() {
        assert_eq!(temperature_c(34), 34);
        assert_eq!(temperature_c(u32::MAX), i32::MAX);
    }

    #[test]
    fn mig_modes() {
        assert_eq!(mig_mode(1), autoglm_api::MigMode::Enabled);
        assert_eq!(mig_mode(0), autoglm_api::MigMode::Disabled);
    }

    #[test]
    fn mig_profiles() {
        assert_eq!(
            mig_profile_from_name("NVIDIA A100-SXM4-40GB MIG 1g.5gb").as_deref(),
            Some("1g.5gb")
        );
        assert_eq!(
            mig_profile_from_name("NVIDIA H100 80GB HBM3 MIG 3g.40gb").as_deref(),
            Some("3g.40gb")
        );
        assert_eq!(mig_profile_from_name("NVIDIA H100 80GB HBM3"), None);
    }

    #[test]
    fn product_labels() {
        assert_eq!(
            product_label_value("NVIDIA H100 80GB HBM3"),
            "NVIDIA-H100-80GB-HBM3"
        );
        assert_eq!(
            product_label_value("NVIDIA A100-SXM4-80GB"),
            "NVIDIA-A100-SXM4-80GB"
        );
        assert_eq!(product_label_value(" Tesla T4 (rev) "), "Tesla-T4-rev");
        assert_eq!(product_label_value(&"A".repeat(80)).len(), 63);
    }

    #[test]
    fn xid_classification() {
        assert!(!xid_is_fatal(13)); // graphics engine exception (user kernel)
        assert!(!xid_is_fatal(43)); // GPU stopped processing (user app)
        assert!(xid_is_fatal(48)); // double-bit ECC error
        assert!(xid_is_fatal(79)); // GPU has fallen off the bus
    }
}
