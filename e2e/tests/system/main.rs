//! The end-to-end suite: one test binary (a binary per file linked the whole
//! system 17 times over, 2.5 GB of disk and minutes of linking), a module per
//! area. Each test starts its own nats-server and natter; nextest runs each
//! test in a process of its own. The fault-point tests stay a binary of their
//! own (`tests/faults.rs`): fault points are global to a process.

mod authorization;
mod bad_input;
mod bench;
mod chat;
mod conversations;
mod delivery;
mod files;
mod frames;
mod groups;
mod inbox_once;
mod keys;
mod large_groups;
mod limits;
mod permissions;
mod phone;
mod presence;
mod search;
mod sessions;
mod social;
mod speech;
mod split;
mod tls;
