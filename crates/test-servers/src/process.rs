//! The server process a fixture owns: started with its stdout and stderr
//! appended to a log file, polled until a readiness check passes, killed with
//! SIGKILL, and killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a wait for readiness ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The check passed.
    Ready,
    /// The process exited (or was never started) before the check passed.
    Exited,
    /// The timeout passed with the process still running; it is left running.
    TimedOut,
}

/// One server process with its binary and log file.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// The program name used in errors, e.g. `redis-server`.
    program: &'static str,
    binary: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    pub(crate) fn new(program: &'static str, binary: PathBuf, log_path: PathBuf) -> Self {
        ServerProcess {
            program,
            binary,
            log_path,
            child: None,
        }
    }

    /// A command for the server binary, to be given its arguments and passed
    /// to [`ServerProcess::spawn`].
    pub(crate) fn command(&self) -> Command {
        Command::new(&self.binary)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Starts `command` with stdin closed and its output appended to the log,
    /// without waiting for the server to be ready.
    pub(crate) fn spawn(&mut self, mut command: Command) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("cannot open the {} log: {e}", self.program))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open the {} log: {e}", self.program))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `check` every `poll` until it passes, the process exits (then it
    /// is forgotten) or `timeout` passes.
    pub(crate) fn wait_until(
        &mut self,
        check: impl Fn() -> bool,
        timeout: Duration,
        poll: Duration,
    ) -> Wait {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return Wait::Ready;
            }
            if !self.is_running() {
                self.child = None;
                return Wait::Exited;
            }
            if Instant::now() >= deadline {
                return Wait::TimedOut;
            }
            std::thread::sleep(poll);
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the log, on one line, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
