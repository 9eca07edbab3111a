//! lab
pub const DEFAULT_IMAGE: &str = "capstan-lab:bookworm-1";
