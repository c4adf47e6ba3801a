//! Telling people what the services did, without ever holding the work up.

pub mod webhook;
