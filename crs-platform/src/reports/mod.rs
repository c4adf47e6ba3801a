//! The HTML reports of runs and cycles and the index beside them, with their
//! charts drawn inline.

pub mod charts;
pub mod pages;
