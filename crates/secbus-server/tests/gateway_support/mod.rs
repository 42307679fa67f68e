//! A `secbus serve` child process and a plain HTTP/1.1 client for it: what
//! the tests of the real binary share.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The API key every test gateway admits (tenant acme, publish and read).
pub(crate) const KEY: &str = "sbk_gateway-fault-test-key-0123456789";
/// A `secbus serve` child and the address it listens on.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// What the process wrote to stderr so far.
    pub(crate) stderr: Arc<Mutex<String>>,
}

impl Gateway {
    /// `secbus serve` on `bus` with a config in `dir` that admits [`KEY`].
    pub(crate) fn start(dir: &Path, bus: &str) -> Gateway {
        let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
        let config = dir.join("secbus.toml");
        std::fs::write(
            &config,
            format!(
                "bus = \"{bus}\"\nlisten = \"127.0.0.1:0\"\n[rate_limit]\nevents_per_second = 0.0\n\
                 [[keys]]\nname = \"ingest\"\ntenant = \"acme\"\nroles = [\"publish\", \"read\"]\n\
                 hash = \"sha256:{hash}\"\n"
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        Gateway::spawn(&["serve", "--config", &config], &[])
            .unwrap_or_else(|stderr| panic!("the gateway did not start: {stderr}"))
    }

    /// `secbus <args>` with `env` set; the gateway once it says where it
    /// listens, or everything it wrote to stderr when it exits first.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Gateway, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_secbus"));
        command
            .args(args)
            .env_remove("SECBUS_BUS")
            .env_remove("SECBUS_LISTEN")
            .env("SECBUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(String::new()));
        let written = Arc::clone(&seen);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("secbus gateway listening on http://") {
                    let _ = tx.send(Some(rest.split(' ').next().unwrap_or_default().to_owned()));
                }
                let mut written = written.lock().unwrap();
                written.push_str(&line);
                written.push('\n');
            }
            let _ = tx.send(None);
        });
        let stderr = || seen.lock().unwrap().clone();
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => Ok(Gateway {
                child,
                addr,
                stderr: Arc::clone(&seen),
            }),
            Ok(None) => {
                let _ = child.wait();
                Err(stderr())
            }
            Err(_) => {
                let _ = child.kill();
                Err(format!("no answer within 30 s: {}", stderr()))
            }
        }
    }

    /// Sends SIGTERM and waits up to 30 s for the exit status.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop within 30 s of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: the status and the body, or `None` when the
/// connection failed.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut socket = TcpStream::connect(addr).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    socket
        .write_all(format!("{head}\r\n{body}").as_bytes())
        .ok()?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// POSTs `body` with [`KEY`] and returns the status, or `None` when the
/// connection failed.
pub(crate) fn post(addr: &str, path: &str, content_type: &str, body: &str) -> Option<u16> {
    let bearer = format!("Bearer {KEY}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", content_type),
    ];
    request(addr, "POST", path, &headers, body).map(|(status, _)| status)
}
