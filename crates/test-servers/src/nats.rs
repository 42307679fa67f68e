//! `nats-server -js` fixtures: one server ([`NatsServer`]) or a three-node
//! JetStream cluster ([`NatsCluster`]) on free loopback ports, each node with
//! its own store dir in a temp dir, that a test can kill (SIGKILL) and restart
//! on the same port and store dir.
//!
//! A node counts as started when its monitoring endpoint `/healthz` answers
//! 200: the client port is open, JetStream is enabled, its streams are
//! recovered from the store dir and, in a cluster, the node has found the
//! JetStream meta leader. Checking only the client port would let a test talk
//! to a JetStream that still answers "no responders".

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{ServerProcess, Wait};
use crate::{find_binary, free_port};

/// How long a node gets to report healthy after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried when a server cannot bind the ones it was given.
const PORT_ATTEMPTS: usize = 5;
/// The cluster name of [`NatsCluster`] nodes.
const CLUSTER_NAME: &str = "secbus-test";

/// The ports and store dir of one node.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    monitor_port: u16,
    /// Cluster port and the routes to every node (itself included, which
    /// nats-server ignores), for cluster nodes.
    cluster: Option<(u16, Vec<u16>)>,
    /// Declared before `dir`: the process is killed before its dir is removed.
    process: ServerProcess,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(
        binary: PathBuf,
        name: String,
        cluster: Option<(u16, Vec<u16>)>,
    ) -> Result<Node, String> {
        let port = free_port();
        let monitor_port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("secbus-nats-")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir for nats-server: {e}"))?;
        let log_path = dir.path().join("nats-server.log");
        Ok(Node {
            name,
            port,
            monitor_port,
            cluster,
            process: ServerProcess::new("nats-server", binary, log_path),
            dir,
        })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.process.log_path().to_owned()
    }

    fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process without waiting for it to be healthy.
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = self.process.command();
        command
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store_dir())
            .arg("--server_name")
            .arg(&self.name);
        if let Some((cluster_port, routes)) = &self.cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{cluster_port}"))
                .arg("--cluster_name")
                .arg(CLUSTER_NAME)
                .arg("--routes")
                .arg(routes.join(","));
        }
        self.process.spawn(command)
    }

    /// Waits until the node reports healthy; kills it and says why otherwise.
    fn wait_healthy(&mut self) -> Result<(), String> {
        match self.wait(START_TIMEOUT) {
            Wait::Ready => Ok(()),
            Wait::Exited => Err(self.exited_error()),
            Wait::TimedOut => {
                self.kill();
                Err(format!(
                    "nats-server {} did not report healthy on port {} within {:?}: {}",
                    self.name,
                    self.port,
                    START_TIMEOUT,
                    self.process.log_tail()
                ))
            }
        }
    }

    /// Polls `/healthz` until it answers 200, the process exits or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> Wait {
        let monitor_port = self.monitor_port;
        self.process
            .wait_until(|| healthy(monitor_port), timeout, Duration::from_millis(25))
    }

    fn exited_error(&self) -> String {
        format!(
            "nats-server {} exited (port {}): {}",
            self.name,
            self.port,
            self.process.log_tail()
        )
    }

    /// Starts the node again on the same ports and store dir; the old sockets
    /// may linger a moment, so a failed bind is retried until the deadline.
    fn respawn(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.spawn()?;
            if let Some(e) = self.exited_early() {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Ok(());
        }
    }

    /// Gives a fresh process a moment to fail on a busy port.
    fn exited_early(&mut self) -> Option<String> {
        match self.wait(Duration::from_millis(300)) {
            Wait::Exited => Some(self.exited_error()),
            Wait::Ready | Wait::TimedOut => None,
        }
    }
}

/// A running `nats-server -js`, stopped (SIGKILL) and its temp dir removed on drop.
///
/// ```no_run
/// let mut server = secbus_test_servers::NatsServer::start().unwrap();
/// println!("{}", server.url()); // nats://127.0.0.1:<port>
/// server.kill(); // kill -9
/// server.restart().unwrap(); // same port, same store dir
/// ```
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port with a new store
    /// dir and waits until it reports healthy. The error says what went wrong
    /// (binary missing, server not starting, with the end of its log).
    pub fn start() -> Result<NatsServer, String> {
        let binary = find_binary("nats-server")?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut node = Node::new(binary.clone(), "secbus-test".to_owned(), None)?;
            let started = node.spawn().and_then(|()| node.wait_healthy());
            match started {
                Ok(()) => return Ok(NatsServer { node }),
                // Another process may have taken a port in between: try others.
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The loopback client port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// The JetStream store dir.
    pub fn store_dir(&self) -> PathBuf {
        self.node.store_dir()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.node.log_path()
    }

    /// Whether the server process is running (it was not killed).
    pub fn is_running(&mut self) -> bool {
        self.node.is_running()
    }

    /// Kills the server with SIGKILL, as a crash would: no shutdown, no final
    /// flush; what survives is what JetStream had written to its store.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port and store dir (killing it first
    /// if it still runs) and waits until it reports healthy, its streams recovered.
    pub fn restart(&mut self) -> Result<(), String> {
        self.node.respawn()?;
        self.node.wait_healthy()
    }

    /// The directory the server's files live in (store dir and log).
    pub fn dir(&self) -> &Path {
        self.node.dir.path()
    }
}

/// A three-node JetStream cluster on loopback ports: each node with its own
/// client, cluster and monitoring port, server name and store dir. Nodes are
/// stopped (SIGKILL) and their temp dirs removed on drop.
///
/// ```no_run
/// let mut cluster = secbus_test_servers::NatsCluster::start().unwrap();
/// println!("{}", cluster.url()); // nats://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>
/// cluster.kill(1);
/// cluster.restart(1).unwrap();
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// The number of nodes.
    pub const NODES: usize = 3;

    /// Starts three nodes routed to each other and waits until every one
    /// reports healthy (the JetStream meta group has a leader).
    pub fn start() -> Result<NatsCluster, String> {
        let binary = find_binary("nats-server")?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let cluster_ports: Vec<u16> = (0..Self::NODES).map(|_| free_port()).collect();
            let nodes = (0..Self::NODES)
                .map(|i| {
                    Node::new(
                        binary.clone(),
                        format!("secbus-node-{i}"),
                        Some((cluster_ports[i], cluster_ports.clone())),
                    )
                })
                .collect::<Result<Vec<Node>, String>>()?;
            let mut cluster = NatsCluster { nodes };
            // All nodes must run before any can elect a meta leader.
            let started = cluster
                .nodes
                .iter_mut()
                .try_for_each(Node::spawn)
                .and_then(|()| cluster.nodes.iter_mut().try_for_each(Node::wait_healthy));
            match started {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Every node's client URL, comma-separated, for a client that should fail
    /// over between them: `nats://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("nats://{}", hosts.join(","))
    }

    /// The client URL of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// The server name of node `i` (`secbus-node-<i>`).
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i].is_running()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on the same ports and store dir and waits until it
    /// reports healthy (caught up with the cluster).
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].respawn()?;
        self.nodes[i].wait_healthy()
    }
}

/// True when the monitoring endpoint answers `/healthz` with 200.
fn healthy(monitor_port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", monitor_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:{monitor_port}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn starts_kills_and_restarts_on_the_same_port_and_store() {
        let mut server = NatsServer::start().expect("nats-server starts");
        let port = server.port();
        assert!(accepts(port));
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
        server.kill();
        assert!(!server.is_running());
        assert!(!accepts(port));
        server.restart().expect("nats-server restarts");
        assert_eq!(server.port(), port);
        assert!(accepts(port));
        assert!(
            server.store_dir().join("jetstream").is_dir(),
            "JetStream keeps its store in the temp dir"
        );
        let dir = server.dir().to_owned();
        drop(server);
        assert!(!dir.exists(), "the temp dir is removed on drop");
        assert!(!accepts(port));
    }

    #[test]
    fn a_cluster_survives_a_node_restart() {
        let mut cluster = NatsCluster::start().expect("the cluster starts");
        let url = cluster.url();
        assert_eq!(url.matches("127.0.0.1:").count(), NatsCluster::NODES);
        cluster.kill(1);
        assert!(!cluster.is_running(1));
        assert!(cluster.is_running(0) && cluster.is_running(2));
        cluster.restart(1).expect("node 1 rejoins");
        assert!(cluster.is_running(1));
        assert_eq!(cluster.node_name(1), "secbus-node-1");
    }
}
