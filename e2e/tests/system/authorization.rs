//! The authorization matrix: every HTTP route and every WebSocket frame
//! type, called by each kind of caller, answers what the table in
//! `docs/authorization.md` says, and no answer carries anything the caller
//! may not see.
//!
//! The table is the source of truth for people and for this test: a route
//! of the edge's route table ([`edge::http::route_table`]) or a client frame
//! type (from the protobuf descriptors) without a row fails the test, and so
//! does a row whose request this file does not know how to make.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use e2e::{Api, Client, Format, Mode, System, User};
use futures::future::try_join_all;
use prost::Message as _;
use reqwest::Method;
use serde_json::{Value, json};
use shared::proto::delivery::signal;
use shared::proto::edge::{Auth as AuthFrame, ServerFrame, client_frame, server_frame};

const MATRIX: &str = include_str!("../../../docs/authorization.md");

/// Who calls, relative to the world's owner and its group (see the doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Anonymous,
    Stranger,
    Friend,
    Blocked,
    Member,
    Admin,
    Owner,
    Removed,
}

const ROLES: [Role; 8] = [
    Role::Anonymous,
    Role::Stranger,
    Role::Friend,
    Role::Blocked,
    Role::Member,
    Role::Admin,
    Role::Owner,
    Role::Removed,
];

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Stranger => "stranger",
            Role::Friend => "friend",
            Role::Blocked => "blocked",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
            Role::Removed => "removed",
        }
    }
}

/// How much of the world a row may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixture {
    /// Reads, or changes only the caller's own view: one world for all such rows.
    Shared,
    /// Changes the caller's own account or relations: a world for the row.
    Row,
    /// Changes what the next caller sees: a new world after every success.
    Cell,
}

struct Row {
    /// `METHOD /path[?query] [{target}]` or `WS <frame type> [{target}]`.
    request: String,
    expect: [u16; 8],
    fixture: Fixture,
}

impl Row {
    fn is_ws(&self) -> bool {
        self.request.starts_with("WS ")
    }

    /// `METHOD path` with the query left out and every `{name}` as `{}`:
    /// what a route of the route table is compared with.
    fn route(&self) -> String {
        let mut parts = self.request.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        route_key(method, path.split('?').next().unwrap_or_default())
    }

    /// The frame type of a `WS` row.
    fn frame(&self) -> &str {
        self.request.split_whitespace().nth(1).unwrap_or_default()
    }
}

fn route_key(method: &str, path: &str) -> String {
    let path: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect();
    format!("{method} {}", path.join("/"))
}

/// The rows of the matrix table in `docs/authorization.md`.
fn parse_matrix() -> anyhow::Result<Vec<Row>> {
    let header = MATRIX
        .lines()
        .find(|line| line.starts_with("| Request |"))
        .context("the matrix header")?;
    let columns: Vec<&str> = cells(header);
    let mut wanted = vec!["Request"];
    wanted.extend(ROLES.iter().map(|r| r.name()));
    wanted.push("fixture");
    ensure!(
        columns == wanted,
        "matrix columns {columns:?}, expected {wanted:?}"
    );
    let mut rows = Vec::new();
    for line in MATRIX.lines().filter(|l| l.starts_with("| `")) {
        let cells = cells(line);
        ensure!(
            cells.len() == 10,
            "matrix row with {} cells: {line}",
            cells.len()
        );
        let request = cells[0].trim_matches('`').to_owned();
        let mut expect = [0u16; 8];
        for (slot, cell) in expect.iter_mut().zip(&cells[1..9]) {
            *slot = cell
                .parse()
                .with_context(|| format!("status {cell:?} in: {line}"))?;
        }
        let fixture = match cells[9] {
            "shared" => Fixture::Shared,
            "row" => Fixture::Row,
            "cell" => Fixture::Cell,
            other => bail!("fixture {other:?} in: {line}"),
        };
        rows.push(Row {
            request,
            expect,
            fixture,
        });
    }
    Ok(rows)
}

fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// The client frame types, from the protobuf descriptors (the `kind` oneof
/// of `ClientFrame`), so a new frame type cannot be left out of the matrix.
fn client_frame_types() -> anyhow::Result<BTreeSet<String>> {
    let set = prost_types::FileDescriptorSet::decode(shared::proto::DESCRIPTORS)?;
    let frame = set
        .file
        .iter()
        .filter(|f| f.package() == "natter.edge.v1")
        .flat_map(|f| &f.message_type)
        .find(|m| m.name() == "ClientFrame")
        .context("ClientFrame in the descriptors")?;
    let kind = frame
        .oneof_decl
        .iter()
        .position(|o| o.name() == "kind")
        .context("the kind oneof")?;
    Ok(frame
        .field
        .iter()
        .filter(|f| f.oneof_index == Some(kind as i32))
        .map(|f| f.name().to_owned())
        .collect())
}

/// The body of each HTTP row (placeholders as in paths, see [`World::fill`]);
/// None = no body. A row missing here fails the test.
fn body_of(request: &str) -> Option<Option<&'static str>> {
    let message = r#"{"conversationId": "{conversation}", "clientMsgId": "{fresh}", "body": {"text": {"text": "matrix"}}}"#;
    Some(match request {
        "POST /v1/auth/register" => {
            Some(r#"{"username": "{fresh_name}", "password": "matrix-password"}"#)
        }
        "POST /v1/auth/login" => Some(
            r#"{"username": "{my_username}", "password": "{my_password}", "deviceName": "matrix"}"#,
        ),
        "POST /v1/auth/refresh" => Some(r#"{"refreshToken": "{my_refresh}"}"#),
        "POST /v1/auth/password" => {
            Some(r#"{"currentPassword": "{my_password}", "newPassword": "{my_password}-new"}"#)
        }
        "POST /v1/auth/phone/code" => Some(r#"{"phone": "{phone}"}"#),
        "POST /v1/auth/phone/login" => {
            Some(r#"{"phone": "{phone}", "code": "{code}", "deviceName": "matrix"}"#)
        }
        "POST /v1/auth/phone/register" => Some(
            r#"{"phone": "{phone}", "code": "{code}", "username": "{fresh_name}", "password": "matrix-password"}"#,
        ),
        "POST /v1/auth/phone" => Some(r#"{"phone": "{phone}", "code": "{code}"}"#),
        "POST /v1/auth/logout" => Some("{}"),
        "PATCH /v1/profile" => Some(r#"{"signature": "matrix"}"#),
        "POST /v1/friends/requests" => Some(r#"{"toUserId": "{user}", "greeting": "matrix"}"#),
        "POST /v1/groups" => Some(r#"{"name": "matrix", "memberIds": ["{user}"]}"#),
        "PATCH /v1/groups/{group}" => Some(r#"{"name": "renamed"}"#),
        "POST /v1/groups/{group}/members" => Some(r#"{"userIds": ["{invitee}"]}"#),
        "PUT /v1/groups/{group}/members/{member}/role" => Some(r#"{"role": "admin"}"#),
        "POST /v1/groups/{group}/leave" => Some("{}"),
        "POST /v1/groups/{group}/transfer" => Some(r#"{"userId": "{member}"}"#),
        "POST /v1/groups/{group}/mute" => Some(r#"{"userId": "{member}", "muted": true}"#),
        "POST /v1/messages {group_conversation}" | "POST /v1/messages {direct_conversation}" => {
            Some(message)
        }
        "POST /v1/conversations/{group_conversation}/read" => Some(r#"{"seq": {group_seq}}"#),
        "POST /v1/conversations/{direct_conversation}/read" => Some(r#"{"seq": {direct_seq}}"#),
        "PATCH /v1/conversations/{group_conversation}/settings"
        | "PATCH /v1/conversations/{direct_conversation}/settings" => Some(r#"{"pinned": true}"#),
        "POST /v1/conversations/{group_conversation}/messages/delete" => {
            Some(r#"{"seqs": [{group_seq}]}"#)
        }
        "POST /v1/conversations/{direct_conversation}/messages/delete" => {
            Some(r#"{"seqs": [{direct_seq}]}"#)
        }
        "POST /v1/conversations/{group_conversation}/messages/{group_seq}/recall"
        | "POST /v1/conversations/{group_conversation}/messages/{member_seq}/recall"
        | "POST /v1/conversations/{direct_conversation}/messages/{direct_seq}/recall"
        | "POST /v1/friends/requests/{request}/accept"
        | "POST /v1/friends/requests/{request}/reject" => None,
        "GET /v1/devices"
        | "DELETE /v1/devices?all_others=true"
        | "DELETE /v1/devices/{device}"
        | "GET /v1/profile"
        | "GET /v1/profiles?user_ids={user}"
        | "GET /v1/users/search?q={username}"
        | "GET /v1/search/messages?q=canary"
        | "GET /v1/search/conversations?q={username}"
        | "GET /v1/users/{user}"
        | "GET /v1/friends"
        | "DELETE /v1/friends/{user}"
        | "GET /v1/friends/requests"
        | "GET /v1/blocks"
        | "PUT /v1/blocks/{user}"
        | "DELETE /v1/blocks/{blocked}"
        | "GET /v1/groups"
        | "GET /v1/groups/{group}"
        | "DELETE /v1/groups/{group}"
        | "GET /v1/groups/{group}/members"
        | "DELETE /v1/groups/{group}/members/{member}"
        | "GET /v1/conversations"
        | "GET /v1/conversations/{group_conversation}/messages"
        | "GET /v1/conversations/{direct_conversation}/messages"
        | "GET /v1/conversations/{group_conversation}/messages/{group_seq}/reads"
        | "GET /v1/conversations/{direct_conversation}/messages/{direct_seq}/reads"
        | "GET /v1/presence?user_ids={user}"
        | "OPTIONS /v1/files/uploads"
        | "POST /v1/files/uploads"
        | "HEAD /v1/files/uploads/{upload}"
        | "PATCH /v1/files/uploads/{upload}"
        | "DELETE /v1/files/uploads/{upload}"
        | "GET /v1/files/{file}"
        | "GET /v1/files/{image}/thumbnails/{variant}"
        | "POST /v1/messages/{direct_message}/transcribe"
        | "GET /v1/ws"
        | "GET /healthz"
        | "GET /readyz"
        | "GET /"
        | "GET /assets/{asset}" => None,
        _ => return None,
    })
}

/// The WebSocket rows this file knows how to make.
fn knows_frame_row(request: &str) -> bool {
    matches!(
        request,
        "WS send {group_conversation}"
            | "WS send {direct_conversation}"
            | "WS typing {group_conversation}"
            | "WS typing {direct_conversation}"
            | "WS ack"
            | "WS resume"
            | "WS ping"
            | "WS auth {owner_token}"
    )
}

static FRESH: AtomicU32 = AtomicU32::new(1);

fn fresh() -> u32 {
    FRESH.fetch_add(1, Ordering::Relaxed)
}

/// What the world holds that only some may see.
struct Secret {
    text: String,
    what: &'static str,
    seen_by: &'static [Role],
}

/// The owner, their group and the people around them (see the doc).
struct World {
    users: BTreeMap<Role, User>,
    vars: BTreeMap<&'static str, String>,
    secrets: Vec<Secret>,
}

impl World {
    async fn build(api: &Api) -> anyhow::Result<Self> {
        let n = fresh();
        let named = [
            (Some(Role::Owner), "owner"),
            (Some(Role::Admin), "admin"),
            (Some(Role::Member), "member"),
            (Some(Role::Removed), "removed"),
            (Some(Role::Friend), "friend"),
            (Some(Role::Blocked), "blocked"),
            (Some(Role::Stranger), "stranger"),
            (None, "invitee"),
            (None, "asker"),
        ];
        let made = try_join_all(named.iter().map(|(_, name)| {
            let username = format!("m{n}{name}");
            async move { api.user(&username).await }
        }))
        .await?;
        let mut users = BTreeMap::new();
        let mut others = Vec::new();
        for ((role, _), user) in named.iter().zip(made) {
            match role {
                Some(role) => {
                    users.insert(*role, user);
                }
                None => others.push(user),
            }
        }
        let [invitee, asker] = <[User; 2]>::try_from(others).map_err(|_| anyhow::anyhow!("two"))?;
        let owner = users[&Role::Owner].clone();
        let (admin, member, removed, friend, blocked) = (
            users[&Role::Admin].clone(),
            users[&Role::Member].clone(),
            users[&Role::Removed].clone(),
            users[&Role::Friend].clone(),
            users[&Role::Blocked].clone(),
        );
        // Invites are friends-only: the group's people are the owner's friends.
        for other in [&admin, &member, &removed, &friend] {
            api.befriend(&owner, other).await?;
        }
        for other in [&owner, &admin, &member] {
            api.befriend(&invitee, other).await?;
        }
        ensure!(api.set_block(&owner, &blocked, true).await? == 200, "block");
        let greeting = format!("matrix-request-{n}");
        let (status, asked) = api.request_friend(&asker, &owner, &greeting).await?;
        ensure!(status == 200, "friend request: {status} {asked}");
        let request = asked["request"]["id"]
            .as_str()
            .context("request id")?
            .to_owned();
        let second = api.another_device(&owner).await?;

        let group = api
            .create_group(&owner, "matrix", &[&admin, &member, &removed])
            .await?;
        let group_id = group["id"].as_str().context("group id")?.to_owned();
        let gc = group["conversationId"]
            .as_str()
            .context("conversation")?
            .to_owned();
        let role = format!("/v1/groups/{group_id}/members/{}/role", admin.user_id);
        let (status, body) = api
            .send_method(
                Method::PUT,
                &role,
                Some(&owner.token),
                Some(json!({"role": "admin"})),
            )
            .await?;
        ensure!(status == 200, "admin: {status} {body}");
        post(
            api,
            &removed,
            json!({"conversationId": gc}),
            "from the removed member",
        )
        .await?;
        let (_, group_seq, _) =
            post(api, &owner, json!({"conversationId": gc}), "from the owner").await?;
        let (_, member_seq, _) =
            post(api, &member, json!({"conversationId": gc}), "from a member").await?;
        let remove = format!("/v1/groups/{group_id}/members/{}", removed.user_id);
        let (status, body) = api.delete(&remove, Some(&owner.token)).await?;
        ensure!(status == 200, "remove: {status} {body}");
        let canary_group = format!("matrix-canary-group-{n}");
        post(api, &owner, json!({"conversationId": gc}), &canary_group).await?;
        let canary_direct = format!("matrix-canary-direct-{n}");
        let (dc, direct_seq, direct_message) = post(
            api,
            &owner,
            json!({"toUserId": friend.user_id}),
            &canary_direct,
        )
        .await?;
        // The search index holds both canaries before anyone searches, so
        // the search rows' "nothing leaks" means something.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, found) = api
                .get("/v1/search/messages?q=canary", Some(&owner.token))
                .await?;
            ensure!(status == 200, "search: {status} {found}");
            let n = found["hits"].as_array().map_or(0, Vec::len);
            if n >= 2 {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the canaries were not indexed: {found}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let index = reqwest::get(format!("{}/", api.base()))
            .await?
            .text()
            .await?;
        let asset = index
            .split("/assets/")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("an asset in the web client's index")?
            .to_owned();
        let file_secret = format!("matrix-file-{n}");
        let file = tus_file(api, &owner, file_secret.as_bytes()).await?;
        let upload = tus_upload(api, &owner, 10).await?;
        let image = e2e::files::Files {
            http: reqwest::Client::new(),
            base: api.base().to_owned(),
        }
        .upload(&owner, "matrix.png", "image", e2e::files::png(3000))
        .await?;
        let vars = BTreeMap::from([
            ("asset", asset),
            ("file", file),
            ("image", image),
            ("variant", "small".to_owned()),
            ("upload", upload),
            ("user", owner.user_id.clone()),
            ("username", owner.username.clone()),
            ("blocked", blocked.user_id.clone()),
            ("member", member.user_id.clone()),
            ("invitee", invitee.user_id.clone()),
            ("group", group_id),
            ("group_conversation", gc),
            ("direct_conversation", dc),
            ("group_seq", group_seq.to_string()),
            ("member_seq", member_seq.to_string()),
            ("direct_seq", direct_seq.to_string()),
            ("direct_message", direct_message),
            ("request", request),
            ("device", second.device_id.clone()),
        ]);
        let secrets = vec![
            Secret {
                text: canary_group,
                what: "a group message sent after the removal",
                seen_by: &[Role::Owner, Role::Admin, Role::Member],
            },
            Secret {
                text: canary_direct,
                what: "the owner's message to a friend",
                seen_by: &[Role::Owner, Role::Friend],
            },
            Secret {
                text: greeting,
                what: "a friend request to the owner",
                seen_by: &[Role::Owner],
            },
            Secret {
                text: file_secret,
                what: "the content of the owner's file",
                seen_by: &[Role::Owner],
            },
            Secret {
                text: second.device_id,
                what: "the owner's other device",
                seen_by: &[Role::Owner],
            },
            Secret {
                text: owner.refresh_token.clone(),
                what: "the owner's refresh token",
                seen_by: &[],
            },
            Secret {
                text: owner.password.clone(),
                what: "the owner's password",
                seen_by: &[],
            },
        ];
        Ok(Self {
            users,
            vars,
            secrets,
        })
    }

    fn owner(&self) -> &User {
        &self.users[&Role::Owner]
    }

    /// `template` with every `{name}` replaced: world values, the caller's
    /// own credentials (`my_*`: for anonymous, the owner's name and wrong
    /// secrets), and fresh names; `{phone}` and `{code}` from `phone`.
    fn fill(&self, template: &str, role: Role, phone: Option<&(String, String)>) -> String {
        let mut out = template.to_owned();
        let me = self.users.get(&role);
        let owner = self.owner();
        let mine = [
            ("my_username", me.unwrap_or(owner).username.clone()),
            (
                "my_password",
                me.map_or("not-the-password".into(), |u| u.password.clone()),
            ),
            (
                "my_refresh",
                me.map_or("made-up-refresh-token".into(), |u| u.refresh_token.clone()),
            ),
        ];
        for (name, value) in self.vars.iter().map(|(k, v)| (*k, v.clone())).chain(mine) {
            out = out.replace(&format!("{{{name}}}"), &value);
        }
        if let Some((number, code)) = phone {
            out = out.replace("{phone}", number).replace("{code}", code);
        }
        while out.contains("{fresh_name}") {
            out = out.replacen("{fresh_name}", &format!("matrixnew{}", fresh()), 1);
        }
        while out.contains("{fresh}") {
            out = out.replacen("{fresh}", &format!("matrix-{}", fresh()), 1);
        }
        out
    }

    /// What `role` may not see, in `text`.
    fn leaks(&self, role: Role, text: &str) -> Vec<&'static str> {
        self.secrets
            .iter()
            .filter(|s| !s.seen_by.contains(&role) && text.contains(&s.text))
            .map(|s| s.what)
            .collect()
    }
}

/// The tus headers (and body) of a `/v1/files/uploads` row: a creation of
/// 10 bytes, a write of 5 at offset 0.
fn tus_request(request: reqwest::RequestBuilder, row: &str) -> reqwest::RequestBuilder {
    let request = request.header("tus-resumable", "1.0.0");
    if row.starts_with("POST ") {
        request
            .header("upload-length", "10")
            .header("upload-metadata", "filename bWF0cml4LmJpbg==")
    } else if row.starts_with("PATCH ") {
        request
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
            .body("hello")
    } else {
        request
    }
}

/// A tus upload of `length` bytes begun by `user`: its file id.
async fn tus_upload(api: &Api, user: &User, length: usize) -> anyhow::Result<String> {
    let created = reqwest::Client::new()
        .post(format!("{}/v1/files/uploads", api.base()))
        .bearer_auth(&user.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .send()
        .await?;
    ensure!(created.status() == 201, "upload: {}", created.status());
    let location = created.headers()["location"].to_str()?;
    Ok(location.trim_start_matches("/v1/files/uploads/").to_owned())
}

/// A whole file of `user`'s with `content`: its id.
async fn tus_file(api: &Api, user: &User, content: &[u8]) -> anyhow::Result<String> {
    let id = tus_upload(api, user, content.len()).await?;
    let written = reqwest::Client::new()
        .patch(format!("{}/v1/files/uploads/{id}", api.base()))
        .bearer_auth(&user.token)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(content.to_vec())
        .send()
        .await?;
    ensure!(written.status() == 204, "file: {}", written.status());
    Ok(id)
}

/// Sends a text over HTTP; the conversation and seq it got.
/// Sends a text over HTTP; the conversation, seq and message id it got.
async fn post(
    api: &Api,
    from: &User,
    mut to: Value,
    text: &str,
) -> anyhow::Result<(String, u64, String)> {
    to["clientMsgId"] = format!("setup-{}", fresh()).into();
    to["body"] = json!({"text": {"text": text}});
    let (status, ack) = api
        .post("/v1/messages", Some(&from.token), to.to_string())
        .await?;
    ensure!(status == 200, "send: {status} {ack}");
    let seq = ack["seq"].as_str().context("seq")?.parse()?;
    Ok((
        ack["conversationId"]
            .as_str()
            .context("conversation")?
            .to_owned(),
        seq,
        ack["messageId"].as_str().context("message id")?.to_owned(),
    ))
}

struct Matrix<'a> {
    system: &'a System,
    http: reqwest::Client,
    /// Another client address for every login code (codes are limited per address).
    addresses: u32,
}

impl Matrix<'_> {
    /// Asks for a login code for a fresh number, from a fresh address.
    async fn phone(&mut self) -> anyhow::Result<(String, String)> {
        self.addresses += 1;
        let n = self.addresses;
        let local: std::net::IpAddr = format!("127.0.{}.{}", 10 + n / 250, 1 + n % 250).parse()?;
        let api = Api::from_address(self.system.api().base().to_owned(), local);
        let number = format!("+86139{:08}", 20_000_000 + fresh());
        let seen = self.system.sms.count(&number);
        let (status, body) = api
            .post(
                "/v1/auth/phone/code",
                None,
                json!({ "phone": number }).to_string(),
            )
            .await?;
        ensure!(status.is_success(), "phone code: {status} {body}");
        let code = self.system.sms.code_after(&number, seen).await?;
        Ok((number, code))
    }

    /// One HTTP call: its status and body text.
    async fn http(
        &mut self,
        world: &World,
        row: &Row,
        role: Role,
    ) -> anyhow::Result<(u16, String)> {
        let template = body_of(&row.request).context("no request for this row")?;
        let mut parts = row.request.split_whitespace();
        let method: Method = parts.next().unwrap_or_default().parse()?;
        let path = world.fill(parts.next().unwrap_or_default(), role, None);
        if path == "/v1/ws" {
            return self
                .ws_status(world.users.get(&role))
                .await
                .map(|s| (s, String::new()));
        }
        // A target names the conversation of a message body.
        let conversation = parts
            .next()
            .map(|target| world.fill(target, role, None))
            .unwrap_or_default();
        let phone = match template {
            Some(t) if t.contains("{phone}") && t.contains("{code}") => Some(self.phone().await?),
            Some(t) if t.contains("{phone}") => {
                Some((format!("+86139{:08}", 30_000_000 + fresh()), String::new()))
            }
            _ => None,
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.system.api().base()));
        if let Some(template) = template {
            let body = world
                .fill(template, role, phone.as_ref())
                .replace("{conversation}", &conversation);
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(user) = world.users.get(&role) {
            request = request.bearer_auth(&user.token);
        }
        if path.starts_with("/v1/files/uploads") {
            request = tus_request(request, &row.request);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// The status of a WebSocket upgrade: 101, or the refusal's.
    async fn ws_status(&self, user: Option<&User>) -> anyhow::Result<u16> {
        let url = match user {
            Some(user) => format!("{}?token={}", self.system.ws_url(), user.token),
            None => self.system.ws_url(),
        };
        match tokio_tungstenite::connect_async(url).await {
            Ok((mut ws, response)) => {
                let _ = ws.close(None).await;
                Ok(response.status().as_u16())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Ok(response.status().as_u16())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One frame over a WebSocket of the caller's: 200 when it did what it
    /// asks, else the status of the error frame's code; and every frame the
    /// caller read, as JSON, for the leak check.
    async fn frame(
        &mut self,
        world: &World,
        row: &Row,
        role: Role,
    ) -> anyhow::Result<(u16, String)> {
        let Some(me) = world.users.get(&role) else {
            return Ok((self.ws_status(None).await?, String::new()));
        };
        let url = self.system.ws_url();
        let mut client = Client::connect(&url, me, Format::Json).await?;
        let target = row
            .request
            .split_whitespace()
            .nth(2)
            .map(|t| world.fill(t, role, None));
        let mut seen: Vec<ServerFrame> = Vec::new();
        let status = match row.frame() {
            "send" => {
                let id = client
                    .send_to(
                        target.as_deref().unwrap_or_default(),
                        &format!("matrix-{}", fresh()),
                        "matrix",
                    )
                    .await?;
                let reply = client.reply(id).await?;
                let status = outcome(&reply, |k| matches!(k, server_frame::Kind::Ack(_)));
                seen.push(reply);
                status
            }
            "typing" => {
                let conversation = target.unwrap_or_default();
                let direct = row.request.contains("direct");
                let watcher = match (role, direct) {
                    (Role::Owner, true) => Role::Friend,
                    (Role::Owner, false) => Role::Member,
                    _ => Role::Owner,
                };
                let mut watch =
                    Client::connect_live(&url, &world.users[&watcher], Format::Json).await?;
                let id = client.typing(&conversation).await?;
                let user_id = me.user_id.clone();
                let heard = watch.signal_where(Duration::from_secs(10), |s| {
                    matches!(&s.kind, Some(signal::Kind::Typing(t)) if t.user_id == user_id && t.conversation_id == conversation)
                });
                let status = tokio::select! {
                    heard = heard => { heard?; 200 }
                    reply = client.reply(id) => {
                        let reply = reply?;
                        let status = outcome(&reply, |_| false);
                        seen.push(reply);
                        status
                    }
                };
                watch.close().await;
                status
            }
            "ack" | "resume" | "ping" | "auth" => {
                let kind = match row.frame() {
                    "ack" => client_frame::Kind::Ack(shared::proto::edge::CursorAck { cursor: 0 }),
                    "resume" => {
                        client_frame::Kind::Resume(shared::proto::edge::Resume { cursor: 0 })
                    }
                    "ping" => {
                        client_frame::Kind::Ping(shared::proto::edge::Ping { client_ts_ms: 1 })
                    }
                    _ => client_frame::Kind::Auth(AuthFrame {
                        access_token: world.owner().token.clone(),
                    }),
                };
                let id = client.send_frame(kind).await?;
                // A ping behind it: an ack has no answer unless it fails, and
                // frames are answered in order.
                let ping = client.ping().await?;
                let mut status = None;
                let mut ponged = false;
                loop {
                    let frame = client.next().await?;
                    ponged |= frame.reply_to == ping;
                    if frame.reply_to == id && status.is_none() {
                        status = Some(outcome(&frame, |k| {
                            matches!(
                                k,
                                server_frame::Kind::Pong(_) | server_frame::Kind::Session(_)
                            )
                        }));
                    }
                    if matches!(frame.kind, Some(server_frame::Kind::CaughtUp(_)))
                        && row.frame() == "resume"
                    {
                        status.get_or_insert(200);
                    }
                    seen.push(frame);
                    if ponged && (row.frame() != "resume" || status.is_some()) {
                        break;
                    }
                }
                match row.frame() {
                    "ack" => status.unwrap_or(200),
                    _ => status.context("no answer")?,
                }
            }
            other => bail!("frame type {other} has no request here"),
        };
        seen.extend(client.drain(Duration::from_millis(50)).await?);
        client.close().await;
        let text = seen
            .iter()
            .map(|f| serde_json::to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        Ok((status, text))
    }
}

/// 200 when the frame is the success `ok` expects, else the error's status.
fn outcome(frame: &ServerFrame, ok: impl Fn(&server_frame::Kind) -> bool) -> u16 {
    match &frame.kind {
        Some(server_frame::Kind::Error(e)) => status_of(&e.code),
        Some(kind) if ok(kind) => 200,
        _ => 0,
    }
}

fn status_of(code: &str) -> u16 {
    match code {
        "bad_request" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not_found" => 404,
        "conflict" => 409,
        "too_large" => 413,
        "rate_limited" => 429,
        "unavailable" => 503,
        _ => 500,
    }
}

#[test]
fn every_route_and_frame_type_has_a_row_and_every_row_a_request() -> anyhow::Result<()> {
    let rows = parse_matrix()?;
    let routes: BTreeSet<String> = edge::http::route_table()
        .iter()
        .map(|(method, path)| route_key(method.as_str(), path))
        .collect();
    let covered: BTreeSet<String> = rows.iter().filter(|r| !r.is_ws()).map(Row::route).collect();
    let missing: Vec<&String> = routes.difference(&covered).collect();
    ensure!(
        missing.is_empty(),
        "routes without a row in docs/authorization.md: {missing:?}"
    );
    let unknown: Vec<&String> = covered.difference(&routes).collect();
    ensure!(
        unknown.is_empty(),
        "rows for routes the edge does not have: {unknown:?}"
    );
    let frames = client_frame_types()?;
    let covered: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.is_ws())
        .map(|r| r.frame().to_owned())
        .collect();
    let missing: Vec<&String> = frames.difference(&covered).collect();
    ensure!(missing.is_empty(), "frame types without a row: {missing:?}");
    ensure!(frames.len() >= 6, "frame types {frames:?}");
    for row in &rows {
        let known = if row.is_ws() {
            knows_frame_row(&row.request)
        } else {
            body_of(&row.request).is_some()
        };
        ensure!(
            known,
            "this test cannot make the request of row `{}`",
            row.request
        );
    }
    let mut seen = BTreeSet::new();
    for row in &rows {
        ensure!(seen.insert(&row.request), "row `{}` twice", row.request);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_what_the_matrix_says_and_nothing_leaks() -> anyhow::Result<()> {
    let rows = parse_matrix()?;
    let system = System::start(Mode::InProcess).await?;
    let api = system.api();
    let mut matrix = Matrix {
        system: &system,
        http: reqwest::Client::new(),
        addresses: 0,
    };
    let started = std::time::Instant::now();
    let shared = World::build(&api).await?;
    let mut worlds = 1;
    let mut wrong = Vec::new();
    let mut leaks = Vec::new();
    let mut observed = Vec::new();
    for row in &rows {
        let mut own: Option<World> = None;
        let mut dirty = row.fixture != Fixture::Shared;
        let mut got = [0u16; 8];
        for (i, role) in ROLES.iter().enumerate() {
            if dirty
                && row.fixture != Fixture::Shared
                && (own.is_none() || row.fixture == Fixture::Cell)
            {
                own = Some(World::build(&api).await?);
                worlds += 1;
                dirty = false;
            }
            let world = own.as_ref().unwrap_or(&shared);
            let (status, text) = if row.is_ws() {
                matrix.frame(world, row, *role).await
            } else {
                matrix.http(world, row, *role).await
            }
            .with_context(|| format!("`{}` as {}", row.request, role.name()))?;
            got[i] = status;
            if (200..300).contains(&status) {
                dirty = true;
            }
            if status != row.expect[i] {
                wrong.push(format!(
                    "`{}` as {}: {status}, the matrix says {}: {}",
                    row.request,
                    role.name(),
                    row.expect[i],
                    text.chars().take(200).collect::<String>()
                ));
            }
            for what in world.leaks(*role, &text) {
                leaks.push(format!("`{}` as {} saw {what}", row.request, role.name()));
            }
        }
        observed.push(format!(
            "| `{}` | {} | {} |",
            row.request,
            got.map(|s| s.to_string()).join(" | "),
            match row.fixture {
                Fixture::Shared => "shared",
                Fixture::Row => "row",
                Fixture::Cell => "cell",
            }
        ));
    }
    eprintln!(
        "authorization matrix: {} rows x {} callers, {worlds} worlds, {:.1} s",
        rows.len(),
        ROLES.len(),
        started.elapsed().as_secs_f64()
    );
    if !wrong.is_empty() || !leaks.is_empty() {
        eprintln!("observed:\n{}", observed.join("\n"));
    }
    ensure!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    ensure!(
        wrong.is_empty(),
        "{} answers differ from docs/authorization.md:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok(())
}
