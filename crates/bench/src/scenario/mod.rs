//! The scenarios, one file each. Each runs this process's share of the users (all of
//! them when alone) and returns its [`crate::record::Record`].

pub mod chat;
pub mod conns;
pub mod group;
pub mod storm;
