//! `craftplane gateway`: the player edge. One address for every server,
//! routed by the hostname a Java Edition client sends in its handshake.
//!
//! Pure parts (protocol, routing, limits) live in their own files without
//! I/O; the listener that uses them comes later.

pub mod limits;
pub mod protocol;
pub mod proxy;
