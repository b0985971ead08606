//! Profiles (created from the registration event, or on first sight) and
//! user search by username, nickname or exact phone.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use shared::endpoint::endpoints::{AuthLookup, AuthPhone};
use shared::ids::UserId;
use shared::proto::auth as auth_pb;
use shared::proto::social as pb;
use shared::rpc::{Client, Identity};
use shared::{RpcError, ids, subject};

use super::{State, user_ids};
use crate::store::{self, ProfileRow};

const NICKNAME_MAX: usize = 64;
const SIGNATURE_MAX: usize = 200;
const QUERY_MAX: usize = 64;
const AVATAR_MAX: usize = 128;

impl State {
    /// The profiles of `ids` that exist, in the order asked, creating the
    /// ones whose registration event has not arrived yet.
    pub(super) async fn profiles(&self, ids: &[String]) -> Result<Vec<ProfileRow>, RpcError> {
        let mut found: HashMap<String, ProfileRow> = store::profiles(&self.pool, ids)
            .await?
            .into_iter()
            .map(|p| (p.user_id.clone(), p))
            .collect();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains_key(*id) && subject::is_valid_token(id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let reply = self
                .caller
                .call_to::<AuthLookup>(&auth_pb::LookupRequest {
                    user_ids: missing.clone(),
                })
                .await?;
            for account in &reply.accounts {
                store::create_profile(
                    &self.pool,
                    &account.user_id,
                    &account.username,
                    &account.nickname,
                    account.created_at_ms,
                )
                .await?;
            }
            if !reply.accounts.is_empty() {
                for p in store::profiles(&self.pool, &missing).await? {
                    found.insert(p.user_id.clone(), p);
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// [`State::profiles`] on the wire.
    pub(super) async fn public_profiles(
        &self,
        ids: &[String],
    ) -> Result<Vec<pb::Profile>, RpcError> {
        Ok(self
            .profiles(ids)
            .await?
            .into_iter()
            .map(to_profile)
            .collect())
    }

    pub(super) async fn profile(&self, id: &str) -> Result<Option<ProfileRow>, RpcError> {
        Ok(self.profiles(&[id.to_owned()]).await?.pop())
    }

    /// The other user of a call: a well-formed id other than the caller's,
    /// of an existing user.
    pub(super) async fn other_user(&self, me: &Identity, id: &str) -> Result<ProfileRow, RpcError> {
        if UserId::parse(id)? == me.user_id {
            return Err(RpcError::bad_request("that is yourself"));
        }
        self.profile(id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such user"))
    }

    pub(super) async fn get_profiles(
        self: Arc<Self>,
        me: Identity,
        input: pb::GetProfilesRequest,
    ) -> Result<pb::GetProfilesResponse, RpcError> {
        let ids = if input.user_ids.is_empty() {
            vec![me.user_id.into()]
        } else {
            input.user_ids
        };
        user_ids(&ids)?;
        Ok(pb::GetProfilesResponse {
            profiles: self.public_profiles(&ids).await?,
        })
    }

    pub(super) async fn update_profile(
        self: Arc<Self>,
        me: Identity,
        input: pb::UpdateProfileRequest,
    ) -> Result<pb::Profile, RpcError> {
        let current = self
            .profile(&me.user_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such user"))?;
        let nickname = match input.nickname.as_deref() {
            None => None,
            Some(n) => match shared::text::display("nickname", n, NICKNAME_MAX)? {
                "" => Some(current.username.as_str()),
                n => Some(n),
            },
        };
        let signature = input
            .signature
            .as_deref()
            .map(|s| shared::text::display("signature", s, SIGNATURE_MAX))
            .transpose()?;
        let avatar = input.avatar.as_deref().map(str::trim);
        if let Some(avatar) = avatar
            && !avatar.is_empty()
            && (avatar.len() > AVATAR_MAX
                || !avatar
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
        {
            return Err(RpcError::bad_request("avatar must be a file id"));
        }
        if let Some(avatar) = avatar
            && !avatar.is_empty()
            && avatar != current.avatar
        {
            self.own_avatar(&me, avatar).await?;
        }
        let update = store::ProfileUpdate {
            nickname,
            signature,
            avatar,
        };
        let now = ids::now_ms();
        store::update_profile(&self.pool, &me.user_id, &update, now).await?;
        let profile = self
            .profile(&me.user_id)
            .await?
            .map(to_profile)
            .ok_or_else(|| RpcError::not_found("no such user"))?;
        self.event(
            subject::event::PROFILE_UPDATED,
            profile.encode_to_vec(),
            &format!("profile:{}:{now}", me.user_id),
        )
        .await;
        Ok(profile)
    }

    /// Which of some files are someone's avatar (for the files service's
    /// sweep of files nothing uses).
    pub(super) async fn avatars_used(
        self: Arc<Self>,
        _: (),
        input: shared::proto::file::FileIds,
    ) -> Result<shared::proto::file::FileIds, RpcError> {
        if input.file_ids.len() > 200 {
            return Err(RpcError::bad_request("at most 200 files at a time"));
        }
        Ok(shared::proto::file::FileIds {
            file_ids: store::avatars_used(&self.pool, &input.file_ids).await?,
        })
    }

    /// Whether `file_id` is an image `me` uploaded as an avatar (which every
    /// signed-in user may then see).
    async fn own_avatar(&self, me: &Identity, file_id: &str) -> Result<(), RpcError> {
        let files = self
            .caller
            .call_to::<shared::endpoint::endpoints::FileDescribe>(
                &shared::proto::file::DescribeRequest {
                    file_ids: vec![file_id.to_owned()],
                },
            )
            .await?
            .files;
        match files.first() {
            Some(f) if f.owner_id == me.user_id.as_str() && f.kind == "avatar" => Ok(()),
            _ => Err(RpcError::bad_request(
                "avatar must be an image you uploaded as an avatar (kind avatar)",
            )),
        }
    }

    pub(super) async fn search(
        self: Arc<Self>,
        (me, client): (Identity, Client),
        input: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, RpcError> {
        let query = input.query.trim();
        if query.is_empty()
            || query.chars().count() > QUERY_MAX
            || query.chars().any(char::is_control)
        {
            return Err(RpcError::bad_request(format!(
                "query must be 1-{QUERY_MAX} characters"
            )));
        }
        let limit = match input.limit {
            0 => 20,
            1..=50 => input.limit as i64,
            _ => return Err(RpcError::bad_request("limit must be within 1..=50")),
        };
        if input.cursor.len() > 200 {
            return Err(RpcError::bad_request("malformed cursor"));
        }
        // A phone number finds exactly its account and nothing else, a
        // few times a minute (enumerating numbers would find who has them).
        if let Some(phone) = shared::text::phone(query) {
            self.phone_searches.check(&me.user_id, client.ip)?;
            let reply = self
                .caller
                .call_to::<AuthPhone>(&auth_pb::PhoneLookupRequest { phone })
                .await?;
            let ids: Vec<String> = reply
                .account
                .map(|a| a.user_id)
                .filter(|id| *id != me.user_id && input.cursor.is_empty())
                .into_iter()
                .collect();
            let users = self.public_profiles(&ids).await?;
            return Ok(pb::SearchResponse {
                users,
                next_cursor: String::new(),
            });
        }
        let mut rows =
            store::search(&self.pool, &me.user_id, query, &input.cursor, limit + 1).await?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last()
                .map(|p| shared::text::fold(&p.username))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::SearchResponse {
            users: rows.into_iter().map(to_profile).collect(),
            next_cursor,
        })
    }
}

pub(super) fn to_profile(row: ProfileRow) -> pb::Profile {
    pb::Profile {
        user_id: row.user_id,
        username: row.username,
        nickname: row.nickname,
        signature: row.signature,
        avatar: row.avatar,
        updated_at_ms: row.updated_at_ms,
    }
}
