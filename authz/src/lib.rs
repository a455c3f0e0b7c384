//! authz: see DESIGN.md.
pub mod ratelimit;
