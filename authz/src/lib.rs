//! authz: see DESIGN.md.

pub mod audit;
pub mod ratelimit;
