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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::{ServerProcess, Wait};
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
    port: u16,
    /// Declared before `dir`: the process is killed before its dir is removed.
    process: ServerProcess,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free loopback port with a new temp dir and waits
    /// until it answers PING. The error says what went wrong (binary missing,
    /// server not answering, with the end of its log).
    pub fn start() -> Result<RedisServer, String> {
        let binary = find_binary("redis-server")?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("secbus-redis-")
                .tempdir()
                .map_err(|e| format!("cannot make a temp dir for redis-server: {e}"))?;
            let log_path = dir.path().join("redis.log");
            let mut server = RedisServer {
                port: free_port(),
                process: ServerProcess::new("redis-server", binary.clone(), log_path),
                dir,
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
        self.process.is_running()
    }

    /// Kills the server with SIGKILL, as a crash would: no shutdown, no final
    /// save; what survives is what was in the append-only file.
    pub fn kill(&mut self) {
        self.process.kill();
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

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = self.process.command();
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""]);
        self.process.spawn(command)?;
        let port = self.port;
        match self
            .process
            .wait_until(|| ping(port), START_TIMEOUT, Duration::from_millis(20))
        {
            Wait::Ready => Ok(()),
            Wait::Exited => Err(format!(
                "redis-server exited on port {}: {}",
                self.port,
                self.process.log_tail()
            )),
            Wait::TimedOut => {
                self.process.kill();
                Err(format!(
                    "redis-server did not answer PING on port {} within {:?}: {}",
                    self.port,
                    START_TIMEOUT,
                    self.process.log_tail()
                ))
            }
        }
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
