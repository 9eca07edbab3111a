//! The declarative engine: roles and templates → desired state → plan against facts → apply.

pub mod apply;
pub mod context;
pub mod desired;
pub mod library;
pub mod plan;
pub mod probe;
pub(crate) mod registry_hosts;
pub mod render;
pub mod role;
