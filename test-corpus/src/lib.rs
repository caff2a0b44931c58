//! The hostile-input corpora of `testdata/` as the tests use them, so that flanneld's unit
//! tests (against fakes) and the binary-level tests (against real components) read each one
//! the same way.

pub mod bad_nodes;
