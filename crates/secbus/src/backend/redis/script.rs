//! Running the engine's Lua scripts.
//!
//! Each script touches the keys of one tenant only (they share a hash tag), and
//! runs atomically: no other command sees it half done, and the append-only
//! file holds its effects as one transaction, so a crash cannot keep part of it.

/// `EVAL <source> <keys> ...`: the caller adds the keys' names and the arguments.
///
/// The source is sent each time rather than `EVALSHA`: Redis compiles it once
/// and finds it by digest afterwards, and a server that restarted (or flushed
/// its script cache) needs no `NOSCRIPT` retry. The scripts are a few hundred
/// bytes next to the events a call carries.
pub(super) fn eval(source: &str, keys: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len()).arg(keys);
    cmd
}
