//! Protobuf wire types (prost) with their canonical JSON mapping (pbjson),
//! generated from `shared/proto/natter/<domain>/v1/*.proto` at build time.
//! These types live only at the boundaries: handlers convert them to domain
//! values, storage never sees them.

#![allow(clippy::all, missing_docs, rust_2018_idioms)]

macro_rules! package {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file, ".rs"));
        include!(concat!(env!("OUT_DIR"), "/", $file, ".serde.rs"));
    };
}

pub mod natter {
    pub mod common {
        pub mod v1 {
            package!("natter.common.v1");
        }
    }
    pub mod auth {
        pub mod v1 {
            package!("natter.auth.v1");
        }
    }
    pub mod message {
        pub mod v1 {
            package!("natter.message.v1");
        }
    }
    pub mod delivery {
        pub mod v1 {
            package!("natter.delivery.v1");
        }
    }
    pub mod presence {
        pub mod v1 {
            package!("natter.presence.v1");
        }
    }
    pub mod group {
        pub mod v1 {
            package!("natter.group.v1");
        }
    }
    pub mod social {
        pub mod v1 {
            package!("natter.social.v1");
        }
    }
    pub mod edge {
        pub mod v1 {
            package!("natter.edge.v1");
        }
    }
    pub mod file {
        pub mod v1 {
            package!("natter.file.v1");
        }
    }
    pub mod search {
        pub mod v1 {
            package!("natter.search.v1");
        }
    }
}

pub use natter::auth::v1 as auth;
pub use natter::common::v1 as common;
pub use natter::delivery::v1 as delivery;
pub use natter::edge::v1 as edge;
pub use natter::file::v1 as file;
pub use natter::group::v1 as group;
pub use natter::message::v1 as message;
pub use natter::presence::v1 as presence;
pub use natter::search::v1 as search;
pub use natter::social::v1 as social;

/// The encoded `FileDescriptorSet` of every natter proto file: what tools
/// (and the authorization matrix test) read to list messages and fields.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
