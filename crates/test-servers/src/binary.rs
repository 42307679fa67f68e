//! Finding server binaries: on PATH, then where Debian installs them.

use std::path::PathBuf;

/// The path of `name` (e.g. `nats-server`), looked up on PATH and then in
/// /usr/sbin and /usr/bin, where Debian's packages put them.
///
/// The error says how to install it, since `scripts/test` installs the Debian
/// packages when it can.
pub fn find_binary(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found on PATH or in /usr/sbin, /usr/bin: install it \
                 (apt-get install -y {name}) or run scripts/test, which does"
            )
        })
}
