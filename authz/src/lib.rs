//! authz: see DESIGN.md.
