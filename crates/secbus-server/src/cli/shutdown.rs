//! The signals that ask a long-running subcommand to stop cleanly.

/// Listens for Ctrl-C (SIGINT) and, on Unix, SIGTERM from the moment it is made,
/// so a signal that arrives before anyone waits is not lost to its default action
/// (ending the process with a signal status instead of exiting 0).
pub(super) struct Shutdown {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Shutdown {
    /// Installs the handlers. One that cannot be installed leaves that signal
    /// its default action; waiting then relies on the other.
    pub(super) fn listen() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Shutdown {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    /// Resolves once a stop was asked for.
    pub(super) async fn requested(&mut self) {
        #[cfg(unix)]
        {
            async fn wait(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = wait(&mut self.interrupt) => {}
                () = wait(&mut self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
