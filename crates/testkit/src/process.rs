//! Child processes started by a test (a controller, a development node, a shell script), and
//! stopped when the test is done with them, also when it panics.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that is stopped when the guard is dropped.
///
/// # Guarantees
/// On drop the process gets `SIGTERM`, so it can shut down cleanly (a development node stops
/// its pods and marks its Node not ready, a controller releases its Lease). If it has not
/// exited within [`ChildGuard::STOP_GRACE`] (polled every 100 ms) it gets `SIGKILL`, a line
/// naming it goes to stderr, and the drop waits for it. Either way it is reaped: no zombie
/// is left behind.
///
/// # Caveats
/// Only the child itself is signalled, not its process group: a shell script should `exec`
/// the program it runs, or forward the signal. Dropping blocks the calling thread for up to
/// [`ChildGuard::STOP_GRACE`]; in an async test that is one tokio worker thread.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// How long a dropped guard waits after `SIGTERM` before `SIGKILL`: 20 s, long enough for
    /// a development node to stop its pods' processes and update its Node.
    pub const STOP_GRACE: Duration = Duration::from_secs(20);

    /// Guards an already started `child`; `name` appears in messages.
    #[must_use]
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child,
        }
    }

    /// Starts `command` (as configured: arguments, environment, stdio) and guards it.
    ///
    /// # Panics
    /// When the process cannot be started; the message names `name`.
    pub fn spawn(name: impl Into<String>, command: &mut Command) -> Self {
        let name = name.into();
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        Self { name, child }
    }

    /// Like [`ChildGuard::spawn`], with the process's stdout and stderr both written to the
    /// file `log` (created, or truncated when it exists).
    ///
    /// # Panics
    /// When `log` cannot be created or the process cannot be started.
    pub fn spawn_logged(name: impl Into<String>, command: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("failed to create log file {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("failed to duplicate log file {}: {e}", log.display()));
        Self::spawn(name, command.stdout(out).stderr(err))
    }

    /// The name given when it was started.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process ID.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to check with `try_wait` whether it is still running.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Already exited (and now reaped): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // Not reaped yet, so the pid is still this child's (a zombie at worst).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Self::STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_stops_a_running_process_with_sigterm() {
        let mut guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("600"));
        assert_eq!(guard.name(), "sleep");
        assert!(matches!(guard.child_mut().try_wait(), Ok(None)));
        let pid = guard.id();
        let start = Instant::now();
        drop(guard);
        // sleep dies on SIGTERM at once; SIGKILL would only come after STOP_GRACE.
        assert!(start.elapsed() < ChildGuard::STOP_GRACE);
        // Reaped: the PID no longer names our child (kill(pid, 0) fails with ESRCH unless
        // the PID was reused, which cannot happen this fast in practice).
        let probe = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
            None,
        );
        assert_eq!(probe, Err(nix::errno::Errno::ESRCH));
    }

    #[test]
    fn spawn_logged_writes_stdout_and_stderr_to_the_log() {
        let dir = std::env::temp_dir().join(format!("autoglm-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("sh.log");
        let mut guard = ChildGuard::spawn_logged(
            "sh",
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            &log,
        );
        let status = guard.child_mut().wait().expect("wait for sh");
        assert!(status.success());
        drop(guard);
        let text = std::fs::read_to_string(&log).expect("read log");
        assert_eq!(text, "out\nerr\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
