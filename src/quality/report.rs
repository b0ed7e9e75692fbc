//! `comparative_analysis/quality.{md,csv,json}`: written by [`crate::report::build`] from the
//! quality results of the run directory.
