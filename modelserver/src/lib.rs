//! modelserver: see DESIGN.md.
