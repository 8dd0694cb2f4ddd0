//! End-to-end scenarios through rulehost's public API, with the policy sets
//! compiled to wasm (`rulehost::bundled`) and hand-written WAT modules.

mod abi;
mod cases;
mod faults;
mod fuzzing;
mod hostile;
mod integrity;
mod service;
mod state;
mod subscription;
mod support;
