//! Clients for the Minecraft protocols craftplane speaks.

pub mod rcon;
pub mod slp;
