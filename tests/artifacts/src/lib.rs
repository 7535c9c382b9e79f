//! Paths of the plugins built for wasm by this crate's build script, for the
//! end-to-end tests.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
