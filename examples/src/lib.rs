//! Examples crate; see the files beside this one.
