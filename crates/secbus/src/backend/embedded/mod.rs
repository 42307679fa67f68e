//! `embedded:<dir>`: durable, one node, no broker (SQLite in WAL mode).
