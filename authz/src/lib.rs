//! authz: see DESIGN.md.

pub mod audit;
