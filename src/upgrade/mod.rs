//! Upgrades: the version-skew policy ([`policy`], pure), the versions a cluster runs now
//! ([`live`], one exec per host), and the Kubernetes releases a target may be
//! ([`available`], from the catalog and the mirror). `capstan upgrade plan` renders them;
//! `capstan upgrade apply` executes the policy's steps.

pub mod available;
pub mod live;
pub mod policy;

pub use available::Available;
pub use live::{LiveHost, read_live};
pub use policy::{
    AllowedTarget, HostUpgrade, LiveVersions, MaxUnavailable, Part, Reading, Refusal, Source, Step,
    StepHost, TargetKind, Violation,
};
