//! The NATS users of natter and what each may publish and subscribe to: the
//! one table that `nats/users.conf` (a cluster, passwords from the
//! environment) and `natter nats-setup` (`just up` and edge boxes, nkeys
//! generated into the data dir) are both rendered from.
//!
//! The rules, each closing a way in:
//! - only the edge (and the all-in-one `natter` user) may call the API, so
//!   only the edge sets the caller identity headers;
//! - each user reads only its own replies (`_INBOX_<user>.>`; natter sets
//!   that prefix from `nats.user`); services answer requests through
//!   `allow_responses`, never by publishing on other users' inboxes;
//! - inbox entries are pushed (`im.push.v1.*.entry`) only by the services
//!   that append to inboxes; the presence service pushes signals only;
//! - the edge reads inboxes and its cursor bucket, and cannot purge, delete
//!   or write a stream;
//! - observers (bots, search, webhooks) read the public events, never a reply
//!   or a push;
//! - an edge box's nats-server links to the hub as `leaf`, with the edge's
//!   permissions: nothing on the box, whoever logs in there, gets more
//!   across the link than an edge.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shared::config::inbox_prefix;
use shared::subject::{self, call, event};

use crate::{SEARCH_CONSUMER, Service};

/// A NATS user natter knows.
#[derive(Clone, Debug)]
pub struct NatsUser {
    pub name: &'static str,
    /// None: no limits (the all-in-one process of a standalone box).
    pub permissions: Option<Permissions>,
}

#[derive(Clone, Debug, Default)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer the requests it receives.
    pub responses: bool,
}

/// The user every natter service runs as in one process.
pub const ALL_IN_ONE: &str = "natter";
/// The user of outside readers of the public events.
pub const OBSERVER: &str = "observer";
/// The user an edge box's nats-server (a leaf node) links to the hub as:
/// what crosses the link is what an edge may do, whatever runs on the box.
pub const LEAF: &str = "leaf";

/// A JetStream API subject, in the local and in any other domain (a process
/// on a leaf node reaches the hub's JetStream as `$JS.<domain>.API`).
fn js(api: &str) -> [String; 2] {
    [format!("$JS.API.{api}"), format!("$JS.*.API.{api}")]
}

fn own_replies(user: &str) -> String {
    format!("{}.>", inbox_prefix(Some(user)))
}

/// Every user of the mesh, in a stable order.
pub fn users() -> Vec<NatsUser> {
    let mut users: Vec<NatsUser> = Service::ALL
        .iter()
        .map(|&service| NatsUser {
            name: service.name(),
            permissions: Some(service_permissions(service)),
        })
        .collect();
    users.push(NatsUser {
        name: ALL_IN_ONE,
        permissions: None,
    });
    users.push(NatsUser {
        name: OBSERVER,
        permissions: Some(observer_permissions()),
    });
    users.push(NatsUser {
        name: LEAF,
        permissions: Some(service_permissions(Service::Edge)),
    });
    users
}

fn strings(subjects: &[&str]) -> Vec<String> {
    subjects.iter().map(|s| s.to_string()).collect()
}

/// What a service's user may do.
pub fn service_permissions(service: Service) -> Permissions {
    const SRV: &str = "$SRV.>";
    let all_js = js(">");
    let inboxes = subject::INBOX_ALL;
    let (entries, signals) = (subject::PUSH_ENTRIES, subject::PUSH_SIGNALS);
    let (mut publish, mut subscribe, responses) = match service {
        Service::Edge => {
            let mut publish = strings(&["im.v1.>", "$KV.im_cursors.>"]);
            // The cursor bucket's writes from a box: `$JS.<domain>.API.$KV...`.
            publish.push("$JS.*.API.$KV.im_cursors.>".into());
            for api in [
                "INFO".to_owned(),
                format!("STREAM.INFO.{}", subject::INBOX_STREAM),
                format!("STREAM.CREATE.{}", subject::INBOX_STREAM),
                format!("DIRECT.GET.{}", subject::INBOX_STREAM),
                format!("DIRECT.GET.{}.>", subject::INBOX_STREAM),
                format!("CONSUMER.CREATE.{}", subject::INBOX_STREAM),
                format!("CONSUMER.CREATE.{}.>", subject::INBOX_STREAM),
                format!("CONSUMER.MSG.NEXT.{}.>", subject::INBOX_STREAM),
                format!("CONSUMER.INFO.{}.>", subject::INBOX_STREAM),
                format!("CONSUMER.DELETE.{}.>", subject::INBOX_STREAM),
                format!("STREAM.INFO.KV_{}", subject::CURSOR_BUCKET),
                format!("STREAM.CREATE.KV_{}", subject::CURSOR_BUCKET),
                format!("DIRECT.GET.KV_{}", subject::CURSOR_BUCKET),
                format!("DIRECT.GET.KV_{}.>", subject::CURSOR_BUCKET),
            ] {
                publish.extend(js(&api));
            }
            let subscribe = strings(&[subject::PUSH_ALL, "im.group.v1.>", event::DEVICES_REVOKED]);
            (publish, subscribe, false)
        }
        Service::Auth => (
            // A new device's cursor starts at the end of its inbox.
            strings(&["im.evt.v1.user.>", "im.evt.v1.device.>", "$KV.im_cursors.>"]),
            strings(&["im.v1.auth.>", SRV]),
            true,
        ),
        Service::Messages => (
            strings(&[
                call::FRIEND_RELATION,
                call::AUTH_MULTIPLE_DEVICES,
                call::FILE_DESCRIBE,
                call::SPEECH_TRANSCRIBE,
                inboxes,
                entries,
                signals,
                "im.group.v1.>",
                event::MESSAGES_CREATED,
                event::MESSAGE_RECALLED,
                event::MESSAGE_TRANSCRIBED,
            ]),
            strings(&[
                "im.v1.message.>",
                "im.v1.conversation.>",
                event::DEVICE_ADDED,
                event::FRIEND_ADDED,
                event::FRIEND_REMOVED,
                "im.evt.v1.block.>",
                SRV,
            ]),
            true,
        ),
        Service::Presence => (
            strings(&[
                "$KV.im_presence.>",
                "im.evt.v1.presence.>",
                call::FRIEND_AUDIENCE,
                call::FRIEND_VISIBLE,
                signals,
                "$JS.ACK.>",
            ]),
            strings(&["im.v1.presence.>", SRV]),
            true,
        ),
        Service::Social => (
            strings(&[
                call::AUTH_LOOKUP,
                call::AUTH_PHONE,
                call::PRESENCE_QUERY,
                call::FILE_DESCRIBE,
                inboxes,
                entries,
                signals,
                "im.evt.v1.profile.>",
                "im.evt.v1.friend.>",
                "im.evt.v1.block.>",
                "$JS.ACK.>",
            ]),
            strings(&[
                "im.v1.profile.>",
                "im.v1.user.>",
                "im.v1.friend.>",
                "im.v1.block.>",
                SRV,
            ]),
            true,
        ),
        Service::Groups => (
            strings(&[
                call::FRIEND_RELATION,
                call::CONVERSATION_APPLY,
                "im.evt.v1.group.>",
            ]),
            strings(&["im.v1.group.>", SRV]),
            true,
        ),
        // Its bytes: the chunks and descriptions of the NATS object store;
        // who may read a file through a message.
        // Its durable consumer of created messages; recordings read as
        // their senders; transcripts handed to the messages service.
        Service::Speech => (
            vec![
                call::FILE_INFO.into(),
                call::FILE_READ.into(),
                call::MESSAGE_TRANSCRIPT.into(),
                format!("$JS.ACK.{}.{}.>", subject::EVENTS_STREAM, speech::CONSUMER),
            ],
            strings(&["im.v1.speech.>", SRV]),
            true,
        ),
        // Its durable consumer of message events; what a user may find is
        // asked of the messages service; groups and friends as the user.
        Service::Search => (
            vec![
                call::MESSAGE_SEARCH_SCOPE.into(),
                call::MESSAGE_VISIBLE.into(),
                call::MESSAGE_EXPORT.into(),
                call::GROUP_MINE.into(),
                call::FRIEND_LIST.into(),
                format!("$JS.ACK.{}.{}.>", subject::EVENTS_STREAM, SEARCH_CONSUMER),
            ],
            strings(&["im.v1.search.>", SRV]),
            true,
        ),
        Service::Files => (
            strings(&[
                "$O.>",
                call::MESSAGE_FILE_ACCESS,
                call::MESSAGE_FILES_USED,
                call::PROFILE_AVATARS_USED,
            ]),
            strings(&["im.v1.file.>", SRV]),
            true,
        ),
    };
    match service {
        Service::Edge => {}
        // Search reads the public events through its own durable consumer
        // and nothing else (not the inboxes, not other streams).
        Service::Search => {
            let (stream, consumer) = (subject::EVENTS_STREAM, SEARCH_CONSUMER);
            for api in [
                "INFO".to_owned(),
                format!("STREAM.INFO.{stream}"),
                format!("STREAM.CREATE.{stream}"),
                format!("CONSUMER.CREATE.{stream}.{consumer}"),
                format!("CONSUMER.CREATE.{stream}.{consumer}.>"),
                format!("CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
                format!("CONSUMER.INFO.{stream}.{consumer}"),
                format!("CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            ] {
                publish.extend(js(&api));
            }
        }
        // The services own the streams and buckets they declare.
        _ => publish.extend(all_js),
    }
    subscribe.push(own_replies(service.name()));
    Permissions {
        publish,
        subscribe,
        responses,
    }
}

/// Outside readers of the public events: their own durable consumers on
/// `IM_EVENTS`, the events themselves, their own replies.
pub fn observer_permissions() -> Permissions {
    let mut publish = Vec::new();
    for api in [
        "INFO".to_owned(),
        format!("STREAM.INFO.{}", subject::EVENTS_STREAM),
        format!("CONSUMER.CREATE.{}.>", subject::EVENTS_STREAM),
        format!("CONSUMER.INFO.{}.>", subject::EVENTS_STREAM),
        format!("CONSUMER.MSG.NEXT.{}.>", subject::EVENTS_STREAM),
    ] {
        publish.extend(js(&api));
    }
    publish.push(format!("$JS.ACK.{}.>", subject::EVENTS_STREAM));
    Permissions {
        publish,
        subscribe: vec![event::ALL.into(), own_replies(OBSERVER)],
        responses: false,
    }
}

/// How the users prove who they are.
pub enum Login<'a> {
    /// A password each, read by nats-server from `$NATTER_<USER>_PASSWORD`
    /// (`NATTER_ALL_PASSWORD` for `natter`).
    Passwords,
    /// An nkey each (see [`Keys`]).
    Nkeys(&'a Keys),
}

/// The environment variable holding `user`'s password (see [`Login::Passwords`]).
pub fn password_variable(user: &str) -> String {
    let name = if user == ALL_IN_ONE { "all" } else { user };
    format!("NATTER_{}_PASSWORD", name.to_uppercase())
}

fn quoted(subjects: &[String]) -> String {
    subjects
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `authorization { users = [...] }` block of a nats-server config.
pub fn authorization(login: &Login<'_>) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for user in users() {
        let credential = match login {
            Login::Passwords => format!(
                "user: {}, password: ${}",
                user.name,
                password_variable(user.name)
            ),
            Login::Nkeys(keys) => match keys.public(user.name) {
                Some(key) => format!("nkey: {key}"),
                None => continue,
            },
        };
        let _ = writeln!(out, "    # {}", user.name);
        let _ = write!(out, "    {{ {credential}");
        if let Some(p) = &user.permissions {
            let _ = write!(
                out,
                ",\n      permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}",
                quoted(&p.publish),
                quoted(&p.subscribe)
            );
            if p.responses {
                out.push_str("\n        allow_responses: true");
            }
            out.push_str("\n      }\n    ");
        } else {
            out.push(' ');
        }
        out.push_str("}\n");
    }
    out.push_str("  ]\n}\n");
    out
}

/// The text of `nats/users.conf` (included by the cluster's node configs).
pub fn users_conf() -> String {
    format!(
        "# Users and subject permissions of a natter cluster, included by the node\n\
         # configs. GENERATED by `natter nats-setup --users-conf` from\n\
         # services/natter/src/nats_users.rs (a test fails when this file is stale).\n\
         # Passwords come from the environment of the nats-server process; each\n\
         # natter process connects as the user of what it runs (NATTER_NATS__USER,\n\
         # NATTER_NATS__PASSWORD), `natter` when it runs every service.\n\n{}",
        authorization(&Login::Passwords)
    )
}

/// The nkeys of every user, kept as seed files (`<user>.nk`, owner-only) in
/// one folder: made on first use, kept after.
pub struct Keys {
    dir: PathBuf,
    public: BTreeMap<String, String>,
}

impl Keys {
    /// Loads the keys in `dir`, making the missing ones.
    pub fn load_or_generate(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        restrict(dir, 0o700)?;
        let mut public = BTreeMap::new();
        for user in users() {
            let file = dir.join(format!("{}.nk", user.name));
            let pair = match std::fs::read_to_string(&file) {
                Ok(seed) => nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
                    std::io::Error::other(format!("{}: not an nkey seed: {e}", file.display()))
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let pair = nkeys::KeyPair::new_user();
                    let seed = pair.seed().map_err(std::io::Error::other)?;
                    write_private(&file, &format!("{seed}\n"))?;
                    pair
                }
                Err(e) => return Err(e),
            };
            public.insert(user.name.to_owned(), pair.public_key());
        }
        Ok(Self {
            dir: dir.to_owned(),
            public,
        })
    }

    /// The public key of `user`.
    pub fn public(&self, user: &str) -> Option<&str> {
        self.public.get(user).map(String::as_str)
    }

    /// The seed file of `user` (for `nats.nkey_file`).
    pub fn seed_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.nk"))
    }
}

fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file)?.write_all(text.as_bytes())
}

/// Writes a generated config to `file` (replacing it), readable by its
/// owner only: a leaf config holds the hub link's seed.
pub fn write_config(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file)?.write_all(text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let _ = (path, mode);
    Ok(())
}

/// A standalone nats-server config (`just up`, an edge box on its own, or a
/// hub that edge boxes link to on `leafnodes`): JetStream under `store`,
/// every user with its nkey.
pub fn standalone_conf(keys: &Keys, listen: &str, store: &Path, leafnodes: Option<&str>) -> String {
    let leafnodes = leafnodes.map(leafnodes_listen).unwrap_or_default();
    format!(
        "# natter's nats-server, GENERATED by `natter nats-setup` (rewritten on each\n\
         # run; the keys beside it are kept). Every client logs in with an nkey.\n\n\
         server_name: natter\n\
         listen: {listen}\n\
         # A chat message is small; files go to the object store in chunks.\n\
         max_payload: 1MB\n\n\
         jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 10GB\n}}\n\n{leafnodes}{}",
        store.display(),
        authorization(&Login::Nkeys(keys))
    )
}

/// How an edge box's nats-server logs in to the hub's leaf node port.
pub enum LeafLogin<'a> {
    /// The URL, with `leaf:<password>@` in it, is read from
    /// `$NATTER_HUB_URL` when nats-server starts (a cluster with passwords,
    /// as compose.yaml runs): no secret in the file.
    UrlFromEnvironment,
    /// The hub's URL and the `leaf` user's nkey seed (a hub that
    /// `natter nats-setup --leafnodes` made; the seed is copied from its keys).
    Nkey { url: &'a str, seed: &'a str },
}

/// An edge box's nats-server: loopback only, no JetStream of its own (the
/// box holds nothing durable: its edge reads the hub's inboxes across the
/// link), every local user with its nkey, and one link to the hub.
pub fn leaf_conf(keys: &Keys, listen: &str, login: &LeafLogin<'_>) -> String {
    let remote = match login {
        LeafLogin::UrlFromEnvironment => "{ url: $NATTER_HUB_URL }".to_owned(),
        LeafLogin::Nkey { url, seed } => format!("{{ url: \"{url}\", nkey: \"{seed}\" }}"),
    };
    format!(
        "# An edge box's nats-server (a leaf node of the natter hub), GENERATED by\n\
         # `natter nats-setup --leaf`. Local clients log in with their nkeys; the\n\
         # link logs in to the hub as `leaf`, which may do what an edge may.\n\n\
         server_name: natter-leaf\n\
         listen: {listen}\n\
         max_payload: 1MB\n\n\
         leafnodes {{\n  remotes = [\n    {remote}\n  ]\n}}\n\n{}",
        authorization(&Login::Nkeys(keys))
    )
}

/// The `leafnodes` block of a hub that edge boxes link to: they log in as
/// one of the users above (as `leaf`, by design), with its permissions.
pub fn leafnodes_listen(listen: &str) -> String {
    format!("leafnodes {{\n  listen: {listen}\n}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_users_conf_is_rendered_from_this_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats/users.conf");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == users_conf(),
            "nats/users.conf is stale: run `cargo run -p natter -- nats-setup --users-conf > nats/users.conf`"
        );
    }

    #[test]
    fn each_user_reads_only_its_own_replies_and_no_one_else_pushes_entries() {
        for user in users() {
            let Some(p) = user.permissions else { continue };
            // The link of an edge box carries its edge's replies.
            let reader = if user.name == LEAF { "edge" } else { user.name };
            let replies: Vec<&String> = p
                .subscribe
                .iter()
                .filter(|s| s.starts_with("_INBOX"))
                .collect();
            assert_eq!(replies, [&own_replies(reader)], "{}", user.name);
            let pushes_entries = p.publish.iter().any(|s| s == subject::PUSH_ENTRIES);
            assert_eq!(
                pushes_entries,
                ["messages", "social"].contains(&user.name),
                "{}",
                user.name
            );
            let calls_anyone = p.publish.iter().any(|s| s == "im.v1.>");
            assert_eq!(
                calls_anyone,
                ["edge", LEAF].contains(&user.name),
                "{}",
                user.name
            );
            assert!(
                !p.publish.iter().any(|s| s.starts_with("_INBOX")),
                "{}",
                user.name
            );
        }
    }

    #[test]
    fn keys_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = Keys::load_or_generate(&dir.path().join("keys")).expect("keys");
        let again = Keys::load_or_generate(&dir.path().join("keys")).expect("keys again");
        for user in users() {
            let key = keys.public(user.name).expect("a key");
            assert!(key.starts_with('U'), "{key}");
            assert_eq!(again.public(user.name), Some(key));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(keys.seed_file(user.name))
                    .expect("seed file")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        let conf = authorization(&Login::Nkeys(&keys));
        assert_eq!(conf.matches("nkey: U").count(), users().len());
    }
}
