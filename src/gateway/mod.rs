//! `craftplane gateway`: the player edge. One address for every server,
//! routed by the hostname a Java Edition client sends in its handshake.
//!
//! The pure parts, without I/O, each tested on its own:
//! - [`protocol`]: framing, handshake, login start, legacy ping, the
//!   answers the gateway gives itself (status, disconnect);
//! - [`proxy`]: PROXY protocol v1/v2 from trusted load balancers, v2 to servers;
//! - [`limits`]: per-source rate limits, open connections per server and tenant;
//! - [`routes`]: hostname → server, by the operator's hostname rule.
//!
//! The listener that uses them comes later.

pub mod limits;
pub mod protocol;
pub mod proxy;
pub mod routes;
