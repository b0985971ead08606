//! The files service: uploads, downloads and media of natter's messages and
//! avatars. Its bytes go to an [`object_store::ObjectStore`] chosen by URL
//! ([`store::open`]): the NATS object store by default ([`nats_store`]), so
//! an edge box needs nothing but nats-server.

pub mod nats_store;
pub mod store;
