//! What every natter service shares, and nothing service-specific.
//!
//! Layout:
//! - [`proto`]: the protobuf wire types (prost) with their JSON mapping (pbjson);
//! - [`subject`]: the one module that names subjects, streams, buckets, headers;
//! - [`rpc`]: the request/error envelope, caller identity, and a typed call helper;
//! - [`endpoint`]: one typed definition per call endpoint, its server and its typed call;
//! - [`service`]: serving micro service endpoints with bounded concurrency;
//! - [`nats`]: connecting, connection events, the shared JetStream streams;
//! - [`config`]: layered configuration (defaults, TOML file, `NATTER_*` env);
//! - [`db`]: SQLite/PostgreSQL pools and migrations;
//! - [`ids`]: ids and clocks;
//! - [`text`]: rules for display text and phone numbers;
//! - [`inbox`]: appending to users' inboxes in chain order, and live pushes;
//! - [`push_routes`]: which edges hold a user's devices, for pushes per edge;
//! - [`limit`]: rate limits per key (user, address);
//! - [`telemetry`]: tracing setup;
//! - `testing` (feature `testing`): a real nats-server per test.

pub mod config;
pub mod db;
pub mod endpoint;
pub mod group;
pub mod ids;
pub mod inbox;
pub mod limit;
pub mod nats;
pub mod proto;
pub mod push_routes;
pub mod rpc;
pub mod service;
pub mod subject;
pub mod sync;
pub mod telemetry;
pub mod text;
pub mod token;

#[cfg(feature = "testing")]
pub mod testing;

pub use nats::Nats;
pub use rpc::{ErrorCode, Identity, RpcError};
