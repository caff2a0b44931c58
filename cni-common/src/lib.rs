//! The CNI specification, 0.1.0 to 1.1.0, as one library shared by every plugin of the suite.
//!
//! A plugin binary is `cni_common::skel::main(&MyPlugin)`: the skeleton reads the environment
//! and stdin, validates everything that came from outside before the plugin sees it, calls the
//! plugin, and prints the result or the error in the caller's spec version.

pub mod args;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod fsutil;
pub mod gojson;
pub mod json;
pub mod log;
pub mod result;
pub mod skel;
pub mod subnet_env;
pub mod validate;
pub mod version;

pub use config::NetConf;
pub use env::Command;
pub use error::CniError;
pub use result::CniResult;
pub use skel::{Invocation, Plugin, TypedPlugin};
pub use version::Version;
