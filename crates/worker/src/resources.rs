//! What the container was given: CPU limit (cgroup v2) and the GPU memory cap.

/// The CPU limit in `cpu.max` format (`"<quota> <period>"` or `"max <period>"`), rounded up
/// to whole CPUs; `None` when unlimited or unparsable.
///
/// # Source
/// Linux cgroup v2, `Documentation/admin-guide/cgroup-v2.rst`, "cpu.max".
#[must_use]
pub fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next()?.parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(quota.div_ceil(period).max(1) as usize)
}

/// Intra-op threads for this container: the cgroup v2 CPU limit
/// (`/sys/fs/cgroup/cpu.max`), else the available parallelism, else 1.
#[must_use]
pub fn cpu_threads() -> usize {
    let limit = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|t| parse_cpu_max(&t));
    let avail = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    limit.map_or(avail, |l| l.min(avail))
}

/// The GPU memory cap in MiB from `AUTOGLM_GPU_MEMORY_MIB` (set by the device plugin for a
/// memory slice); `None` when unset or not a positive integer.
#[must_use]
pub fn gpu_memory_cap_mib() -> Option<u64> {
    std::env::var("AUTOGLM_GPU_MEMORY_MIB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_rounds_up() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert!(cpu_threads() >= 1);
    }
}
