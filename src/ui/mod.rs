//! ui
pub fn init(_g: &crate::cli::GlobalArgs) {}
