//! Nothing to call: this crate exists for its link-time side effect (see build.rs).
