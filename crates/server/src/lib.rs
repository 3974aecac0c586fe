//! The `aether` binary's library half: configuration, secrets, wiring and the CLI commands,
//! so integration tests can run the real application in-process.

pub mod app;
pub mod cli;
pub mod config;
pub mod jobs;
pub mod leader;
pub mod probe;
pub mod propagate;
pub mod secrets;

pub use app::App;
pub use config::{Cli, Config};
