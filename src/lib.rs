//! craftplane: a Kubernetes operator that hosts Minecraft servers for many tenants.

pub mod api;
pub mod backup;
pub mod controller;
pub mod gateway;
pub mod kubectl;
pub mod minecraft;
pub mod plugins;
pub mod resources;
pub mod telemetry;
