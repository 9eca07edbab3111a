//! The declarative engine: roles and templates → desired state → plan against facts → apply.

pub mod render;
pub mod role;
