//! `--bus URL`, the one option every command that opens a bus shares.

/// Which bus a command opens.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BusUrl {
    /// The bus: `memory:`, `embedded:<dir>`, `nats://host:port`, `redis://host:port`.
    #[arg(
        long = "bus",
        value_name = "URL",
        env = "SECBUS_BUS",
        default_value = "embedded:./secbus-data"
    )]
    pub(crate) url: String,
}
