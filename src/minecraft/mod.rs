//! Clients for the Minecraft protocols craftplane speaks.

pub mod slp;
