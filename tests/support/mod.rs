//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod lab;
pub mod oci;
pub mod secrets;
pub mod upgrade;
