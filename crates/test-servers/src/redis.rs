//! A `redis-server` fixture: one server per test, on a free loopback port, with
//! its data in a temp dir, that a test can kill (SIGKILL) and restart.
//!
//! The server runs with `--appendonly yes --appendfsync always --save ""`:
//! every write is in the append-only file, fsynced, before Redis replies to it.
//! `always` rather than `everysec` because the fault tests kill the server with
//! SIGKILL and then count what survived: with `everysec`, Redis may postpone the
//! write of its AOF buffer while a background fsync is running and still answer
//! clients, so a write it acknowledged could be missing after `kill -9`. RDB
//! snapshots are off so the AOF is the one source of truth on restart.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_binary, free_port};

/// How long a server gets to answer PING after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh ports tried when a server cannot bind the one it was given.
const PORT_ATTEMPTS: usize = 5;

/// A running `redis-server`, stopped (SIGKILL) and its temp dir removed on drop.
///
/// ```no_run
/// let server = secbus_test_servers::RedisServer::start().unwrap();
/// println!("{}", server.url()); // redis://127.0.0.1:<port>
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port with a new temp dir and waits
    /// until it answers PING. The error says what went wrong (binary missing,
    /// server not answering, with the end of its log).
    pub fn start() -> Result<RedisServer, String> {
        let binary = find_binary("redis-server")?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port(),
                dir: tempfile::Builder::new()
                    .prefix("secbus-redis-")
                    .tempdir()
                    .map_err(|e| format!("cannot make a temp dir for redis-server: {e}"))?,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                // Another process may have taken the port in between: try another.
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (its append-only files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is running (it was not killed or stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL, as a crash would: no shutdown, no final
    /// save; what survives is what was in the append-only file.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir (killing it first
    /// if it still runs) and waits until it answers PING, its data loaded.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger a moment; the port is ours, so wait for it.
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open the redis-server log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open the redis-server log: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            if !self.is_running() {
                self.child = None;
                return Err(format!(
                    "redis-server exited on port {}: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server did not answer PING on port {} within {:?}: {}",
                    self.port,
                    START_TIMEOUT,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when the server answers `+PONG` (not `-LOADING` while it reads its AOF).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    match stream.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_kills_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start().expect("redis-server starts");
        let port = server.port();
        assert!(ping(port));
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        server.kill();
        assert!(!server.is_running());
        assert!(!ping(port));
        server.restart().expect("redis-server restarts");
        assert_eq!(server.port(), port);
        assert!(ping(port));
        let dir = server.dir().to_owned();
        assert!(
            dir.join("appendonlydir").is_dir(),
            "the AOF lives in the temp dir"
        );
        drop(server);
        assert!(!dir.exists(), "the temp dir is removed on drop");
        assert!(!ping(port));
    }
}
