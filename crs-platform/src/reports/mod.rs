//! The HTML reports of runs and cycles and the index beside them, with their
//! charts drawn inline.

mod charts;
pub mod pages;
