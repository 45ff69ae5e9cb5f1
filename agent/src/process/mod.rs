//! Stage 3, processes: the table of live (and recently exited) processes,
//! seeded from `/proc` and kept by fork/exec/exit records, each with its
//! program image linked to the images it came from
//! ([`crate::event::lineage`]).
//!
//! Takes: decoded records. Gives: the image (executable, command line,
//! ancestry) an event happened in. Imports: the foundation and `pipeline`.

pub mod table;

pub use table::ProcessTable;
