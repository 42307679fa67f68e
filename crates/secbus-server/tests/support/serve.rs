//! A `secbus serve` child process for tests of the real binary, and a bare
//! HTTP/1.1 client for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The API key of tenant acme (publish and read) in every test gateway.
pub const KEY: &str = "sbk_gateway-test-key-0123456789";

/// A `secbus serve` child and the address it listens on.
pub struct Gateway {
    pub child: Child,
    pub addr: String,
}

impl Gateway {
    pub fn start(dir: &Path, bus: &str) -> Gateway {
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_secbus"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("SECBUS_BUS")
            .env_remove("SECBUS_LISTEN")
            .env("SECBUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("secbus gateway listening on http://") {
                    let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway says where it listens");
        Gateway { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `body` and returns the status, or `None` when the connection failed.
pub fn post(addr: &str, path: &str, content_type: &str, body: &str) -> Option<u16> {
    let mut socket = TcpStream::connect(addr).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}
