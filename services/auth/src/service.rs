//! The auth service's NATS micro endpoints (defined in
//! `shared::endpoint::endpoints`): `im.v1.auth.register`, `.login`,
//! `.refresh`, `.logout`, `.password`, and for other services `.keys`,
//! `.lookup`, `.phone` and `.devices.multiple`.

use std::sync::Arc;

use shared::db::{self, AnyPool};
use shared::endpoint::Server;
use shared::endpoint::endpoints::{
    AuthChangePhone, AuthDevices, AuthKeys, AuthLogin, AuthLogout, AuthLogoutDevice, AuthLookup,
    AuthMultipleDevices, AuthPassword, AuthPhone, AuthPhoneCode, AuthPhoneLogin, AuthPhoneRegister,
    AuthRefresh, AuthRegister, AuthRevocations,
};
use shared::proto::auth as pb;
use shared::rpc::{Client, internal};
use shared::service::StartError;
use shared::{Identity, Nats, RpcError, ids, subject};
use tokio_util::sync::CancellationToken;

use crate::codes::{Codes, phone_number};
use crate::guard::LoginGuard;
use crate::hashing::{self, DUMMY_HASH};
use crate::keys::{Claims, KeySet};
use crate::{Config, store, validate};

struct State {
    config: Config,
    nats: Nats,
    pool: AnyPool,
    keys: KeySet,
    guard: LoginGuard,
    codes: Codes,
    /// Logouts per user: each one reaches every edge.
    logouts: shared::limit::PerKey<String>,
    /// The inboxes and the devices' cursors: a new device starts at the
    /// end of its user's inbox.
    inbox: async_nats::jetstream::stream::Stream,
    cursors: async_nats::jetstream::kv::Store,
}

/// Runs the auth service until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let pool = db::connect(&config.database_url, 8, &store::MIGRATOR).await?;
    let keys = KeySet::load_or_generate(&pool)
        .await
        .map_err(|e| StartError::setup("signing keys", e))?;
    shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    let inbox = shared::nats::inbox_stream(&nats.jetstream, &config.streams).await?;
    let cursors = shared::nats::cursor_bucket(&nats.jetstream, &config.streams).await?;
    let state = Arc::new(State {
        nats: nats.clone(),
        inbox,
        cursors,
        guard: LoginGuard::new(config.login.clone(), config.max_concurrent_hashes),
        codes: Codes::new(config.sms.clone(), pool.clone()),
        logouts: shared::limit::PerKey::per_minute("logouts", 30),
        config,
        pool,
        keys,
    });

    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter accounts, devices and access tokens",
        state,
        shutdown,
    )
    .await?
    .serve::<AuthRegister, _, _>(64, |s, client, input| async move {
        s.register(client, input).await
    })
    .serve::<AuthLogin, _, _>(64, |s, client, input| async move {
        s.login(client, input).await
    })
    .serve::<AuthRefresh, _, _>(64, |s, _, input| async move { s.refresh(input).await })
    .serve::<AuthPhoneCode, _, _>(64, |s, client, input| async move {
        s.guard.attempt(client.ip)?;
        s.codes.send(client.ip, &input.phone).await
    })
    .serve::<AuthPhoneLogin, _, _>(64, |s, client, input| async move {
        s.phone_login(client, input).await
    })
    .serve::<AuthPhoneRegister, _, _>(64, |s, client, input| async move {
        s.phone_register(client, input).await
    })
    .serve::<AuthChangePhone, _, _>(
        16,
        |s, me, input| async move { s.change_phone(me, input).await },
    )
    .serve::<AuthLogout, _, _>(64, |s, me, _| async move { s.logout(me).await })
    .serve::<AuthPassword, _, _>(16, |s, me, input| async move {
        s.change_password(me, input).await
    })
    .serve::<AuthDevices, _, _>(16, |s, me, _| async move { s.devices(me).await })
    .serve::<AuthLogoutDevice, _, _>(16, |s, me, input| async move {
        s.logout_device(me, input).await
    })
    .serve::<AuthKeys, _, _>(16, |s, (), _| async move {
        Ok(pb::PublicKeysResponse {
            keys: s.keys.public_keys().to_vec(),
        })
    })
    .serve::<AuthLookup, _, _>(64, |s, (), input| async move { s.lookup(input).await })
    .serve::<AuthRevocations, _, _>(16, |s, (), _| async move {
        let since = ids::now_ms() - s.revocations_kept_ms();
        Ok(pb::RevocationsResponse {
            revocations: store::revocations(&s.pool, since).await?,
        })
    })
    .serve::<AuthPhone, _, _>(64, |s, (), input| async move { s.phone(input).await })
    .serve::<AuthMultipleDevices, _, _>(64, |s, (), input| async move {
        s.multiple_devices(input).await
    })
    .listen()
    .await?;
    tracing::info!("auth service ready");
    server.run().await;
    tracing::info!("auth service stopped");
    Ok(())
}

impl State {
    async fn register(
        &self,
        client: Client,
        input: pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, RpcError> {
        self.guard.attempt(client.ip)?;
        validate::username(&input.username)?;
        validate::password(&input.password)?;
        let nickname = validate::display_text("nickname", &input.nickname)?;
        // A number joins an account only with the code sent to it.
        let phone = match input.phone.trim() {
            "" => String::new(),
            given => {
                let phone = phone_number(given)?;
                self.codes.check(&phone, &input.phone_code).await?;
                phone
            }
        };
        let hash = self.hash(client, input.password).await?;
        let id = self
            .create_account(&input.username, nickname, &hash, &phone)
            .await?;
        Ok(pb::RegisterResponse { user_id: id })
    }

    /// Creates an account (`phone` normalized and proven, or empty; its code
    /// is then used up) and announces it.
    async fn create_account(
        &self,
        username: &str,
        nickname: &str,
        password_hash: &str,
        phone: &str,
    ) -> Result<String, RpcError> {
        let nickname = if nickname.is_empty() {
            username
        } else {
            nickname
        };
        let id = ids::new_id();
        let now_ms = ids::now_ms();
        let user = store::NewUser {
            id: &id,
            username,
            password_hash,
            nickname,
            phone,
            now_ms,
        };
        match store::insert_user(&self.pool, &user).await {
            Ok(()) => {}
            Err(e) if db::is_unique_violation(&e) => {
                // (Only someone who proved the number with its code learns
                // that it is taken.)
                let phone_taken =
                    !phone.is_empty() && store::phone_taken(&self.pool, phone).await?;
                return Err(RpcError::conflict(if phone_taken {
                    "phone number is already used by another account"
                } else {
                    "username is taken"
                }));
            }
            Err(e) => return Err(internal("insert user", e)),
        }
        if !phone.is_empty() {
            self.codes.used(phone).await?;
        }
        tracing::info!(user_id = %id, "registered");
        let event = pb::UserRegistered {
            user_id: id.clone(),
            username: username.to_owned(),
            nickname: nickname.to_owned(),
            created_at_ms: now_ms,
        };
        // The account exists either way; a lost event is logged, not fatal.
        let payload = prost::Message::encode_to_vec(&event).into();
        let published = shared::nats::publish_event(
            &self.nats.jetstream,
            subject::event::USER_REGISTERED,
            payload,
            &format!("user:{id}"),
        )
        .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "user.registered event not stored");
        }
        Ok(id)
    }

    /// Logs in with a phone number and the code sent to it.
    async fn phone_login(
        &self,
        client: Client,
        input: pb::PhoneLoginRequest,
    ) -> Result<pb::LoginResponse, RpcError> {
        self.guard.attempt(client.ip)?;
        let device_name = validate::display_text("device_name", &input.device_name)?;
        let phone = phone_number(&input.phone)?;
        self.codes.check(&phone, &input.code).await?;
        // The number is proven: whether it has an account may be said.
        let account = store::by_phone(&self.pool, &phone).await?.ok_or_else(|| {
            RpcError::not_found("no account has this number: register with the same code")
        })?;
        let session = self
            .sign_in(account.id, input.device_id, device_name)
            .await?;
        // (After: a code that met an unknown device id still works.)
        self.codes.used(&phone).await?;
        Ok(session)
    }

    /// Creates an account for a proven phone number and logs it in.
    async fn phone_register(
        &self,
        client: Client,
        input: pb::PhoneRegisterRequest,
    ) -> Result<pb::LoginResponse, RpcError> {
        self.guard.attempt(client.ip)?;
        validate::username(&input.username)?;
        if !input.password.is_empty() {
            validate::password(&input.password)?;
        }
        let nickname = validate::display_text("nickname", &input.nickname)?;
        let device_name = validate::display_text("device_name", &input.device_name)?;
        let phone = phone_number(&input.phone)?;
        self.codes.check(&phone, &input.code).await?;
        // Without a password the account logs in by phone only.
        let hash = if input.password.is_empty() {
            String::new()
        } else {
            self.hash(client, input.password).await?
        };
        let id = self
            .create_account(&input.username, nickname, &hash, &phone)
            .await?;
        self.sign_in(id, String::new(), device_name).await
    }

    /// Moves the caller to a new, proven number; its other devices are
    /// logged out (a stolen session cannot keep an account whose number its
    /// owner takes back).
    async fn change_phone(
        &self,
        me: Identity,
        input: pb::ChangePhoneRequest,
    ) -> Result<pb::ChangePhoneResponse, RpcError> {
        let phone = phone_number(&input.phone)?;
        self.codes.check(&phone, &input.code).await?;
        match store::set_phone(&self.pool, &me.user_id, &phone).await {
            Ok(true) => {}
            Ok(false) => return Err(RpcError::not_found("no such user")),
            Err(e) if db::is_unique_violation(&e) => {
                return Err(RpcError::conflict(
                    "phone number is already used by another account",
                ));
            }
            Err(e) => return Err(internal("set phone", e)),
        }
        self.codes.used(&phone).await?;
        let revoked = self
            .end_sessions(&me.user_id, store::Devices::AllBut(&me.device_id))
            .await?;
        tracing::info!(user_id = %me.user_id, revoked, "phone changed; other devices logged out");
        Ok(pb::ChangePhoneResponse { phone })
    }

    async fn login(
        &self,
        client: Client,
        input: pb::LoginRequest,
    ) -> Result<pb::LoginResponse, RpcError> {
        // What costs nothing first: the address's rate, then its waits.
        self.guard.attempt(client.ip)?;
        let device_name = validate::display_text("device_name", &input.device_name)?;
        let denied = || RpcError::unauthorized("invalid username or password");
        if input.username.len() > validate::USERNAME_MAX
            || input.password.chars().count() > validate::PASSWORD_MAX
        {
            return Err(denied());
        }
        self.guard.check(&input.username, client.ip)?;
        let credentials = store::credentials(&self.pool, &input.username).await?;
        // An unknown username costs a hash too: the answer's timing must not
        // tell which usernames exist.
        // (An account without a password, made by phone, logs in by phone
        // only: the same answer and cost as an unknown username.)
        let (user_id, hash) = match credentials {
            Some(c) if !c.password_hash.is_empty() => (Some(c.id), c.password_hash),
            _ => (None, DUMMY_HASH.to_owned()),
        };
        let valid = self.verify(client, input.password, hash).await?;
        let user_id = match (user_id, valid) {
            (Some(id), true) => id,
            _ => {
                self.guard.failed(&input.username, client.ip);
                return Err(denied());
            }
        };
        self.guard.succeeded(&input.username, client.ip);
        self.sign_in(user_id, input.device_id, device_name).await
    }

    /// Tokens for `user_id` on a new device (`device_id` empty) or one of
    /// its devices again.
    async fn sign_in(
        &self,
        user_id: String,
        device_id: String,
        device_name: &str,
    ) -> Result<pb::LoginResponse, RpcError> {
        let now = ids::now_ms();
        let device_id = if device_id.is_empty() {
            let id = ids::new_id();
            let name = if device_name.is_empty() {
                "device"
            } else {
                device_name
            };
            store::insert_device(&self.pool, &id, &user_id, name, now).await?;
            // Stored first: see `shared::nats::start_device`. Should the
            // cursor not be written, the device starts at the inbox's
            // beginning, which leaves nothing out either.
            if let Err(e) =
                shared::nats::start_device(&self.inbox, &self.cursors, &user_id, &id).await
            {
                tracing::warn!(%user_id, device_id = %id, error = %e, "new device starts at the inbox's beginning");
            }
            // Heard before the login is answered: from then on the user's
            // messages get a copy in its own inbox (see `messages`'
            // `devices`).
            let devices = store::device_count(&self.pool, &user_id).await?;
            let event = pb::DeviceAdded {
                user_id: user_id.clone(),
                device_id: id.clone(),
                at_ms: now,
                devices: u32::try_from(devices).unwrap_or(u32::MAX),
            };
            shared::nats::publish_event(
                &self.nats.jetstream,
                subject::event::DEVICE_ADDED,
                prost::Message::encode_to_vec(&event).into(),
                &format!("device:{id}"),
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "device.added event not stored");
                RpcError::unavailable("the device is not known everywhere yet: try again")
            })?;
            id
        } else {
            let known = subject::is_valid_token(&device_id)
                && store::touch_device(&self.pool, &device_id, &user_id, now).await?;
            if !known {
                return Err(RpcError::not_found("unknown device"));
            }
            device_id
        };

        tracing::info!(%user_id, %device_id, "logged in");
        let (refresh_token, refresh_hash, refresh_expires_at_ms) =
            self.new_refresh(&device_id, now);
        store::set_refresh(&self.pool, &device_id, &refresh_hash, refresh_expires_at_ms).await?;
        self.tokens(
            user_id,
            device_id,
            now,
            refresh_token,
            refresh_expires_at_ms,
        )
    }

    /// A new refresh token for a device: (token, hash of its secret, expiry).
    /// The token is "<device id>.<secret>"; only the hash is stored.
    fn new_refresh(&self, device_id: &str, now_ms: i64) -> (String, String, i64) {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let expires = now_ms + self.config.refresh_token_ttl_secs as i64 * 1000;
        (
            format!("{device_id}.{secret}"),
            hash_secret(&secret),
            expires,
        )
    }

    /// Signs an access token and answers with it and the refresh token.
    fn tokens(
        &self,
        user_id: String,
        device_id: String,
        now_ms: i64,
        refresh_token: String,
        refresh_expires_at_ms: i64,
    ) -> Result<pb::LoginResponse, RpcError> {
        let iat = now_ms / 1000;
        let exp = iat + self.config.access_token_ttl_secs as i64;
        let claims = Claims {
            sub: user_id.clone(),
            did: device_id.clone(),
            iss: self.config.issuer.clone(),
            iat,
            iat_ms: now_ms,
            exp,
        };
        let access_token = self
            .keys
            .sign(&claims)
            .map_err(|e| internal("sign token", e))?;
        Ok(pb::LoginResponse {
            user_id,
            device_id,
            access_token,
            expires_at_ms: exp * 1000,
            refresh_token,
            refresh_expires_at_ms,
        })
    }

    /// Exchanges a refresh token for new tokens; the old one stops working.
    /// A token presented again after its exchange was copied (the thief or
    /// the owner, whoever comes second, holds a stale one): the device is
    /// logged out, so neither keeps the session.
    async fn refresh(&self, input: pb::RefreshRequest) -> Result<pb::LoginResponse, RpcError> {
        let invalid = || RpcError::unauthorized("refresh token is not valid: log in again");
        let (device_id, secret) = input
            .refresh_token
            .split_once('.')
            .filter(|(d, s)| subject::is_valid_token(d) && !s.is_empty() && s.len() <= 100)
            .ok_or_else(invalid)?;
        let now = ids::now_ms();
        let (token, hash, expires) = self.new_refresh(device_id, now);
        let presented = hash_secret(secret);
        let rotated =
            store::rotate_refresh(&self.pool, device_id, &presented, &hash, now, expires).await?;
        let Some(user_id) = rotated else {
            if let Some(user_id) = store::reused_refresh(&self.pool, device_id, &presented).await? {
                tracing::warn!(%user_id, %device_id, "refresh token reused: device logged out");
                self.end_sessions(&user_id, store::Devices::Only(device_id))
                    .await?;
                return Err(RpcError::unauthorized(
                    "refresh token was already used: this device is logged out, log in again",
                ));
            }
            return Err(invalid());
        };
        self.tokens(user_id, device_id.to_owned(), now, token, expires)
    }

    async fn lookup(&self, input: pb::LookupRequest) -> Result<pb::LookupResponse, RpcError> {
        if input.user_ids.len() > 1000 {
            return Err(RpcError::bad_request("at most 1000 user ids per lookup"));
        }
        let ids: Vec<String> = input
            .user_ids
            .into_iter()
            .filter(|id| subject::is_valid_token(id))
            .collect();
        let accounts = store::accounts(&self.pool, &ids).await?;
        Ok(pb::LookupResponse {
            existing_user_ids: accounts.iter().map(|a| a.id.clone()).collect(),
            accounts: accounts.into_iter().map(account).collect(),
        })
    }

    async fn multiple_devices(
        &self,
        input: pb::MultipleDevicesRequest,
    ) -> Result<pb::MultipleDevicesResponse, RpcError> {
        if input.user_ids.len() > 1024 {
            return Err(RpcError::bad_request("at most 1024 user ids per request"));
        }
        let mut ids: Vec<String> = input
            .user_ids
            .into_iter()
            .filter(|id| subject::is_valid_token(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(pb::MultipleDevicesResponse {
            user_ids: store::with_several_devices(&self.pool, &ids).await?,
        })
    }

    async fn phone(
        &self,
        input: pb::PhoneLookupRequest,
    ) -> Result<pb::PhoneLookupResponse, RpcError> {
        let Some(phone) = shared::text::phone(&input.phone) else {
            return Ok(pb::PhoneLookupResponse { account: None });
        };
        let found = store::by_phone(&self.pool, &phone).await?;
        Ok(pb::PhoneLookupResponse {
            account: found.map(account),
        })
    }

    async fn change_password(
        &self,
        me: Identity,
        input: pb::ChangePasswordRequest,
    ) -> Result<pb::ChangePasswordResponse, RpcError> {
        validate::password(&input.new_password)?;
        let denied = || RpcError::forbidden("the current password is wrong");
        if input.current_password.chars().count() > validate::PASSWORD_MAX {
            return Err(denied());
        }
        let hash = store::password_hash(&self.pool, &me.user_id)
            .await?
            .ok_or_else(|| RpcError::not_found("no such user"))?;
        // Guessing the current password with a stolen session waits as a
        // login does (1 s, 2 s ... after 5 wrong ones).
        let guessed = format!("password-change:{}", me.user_id);
        self.guard.check(&guessed, None)?;
        // An account made by phone sets its first password without one.
        if !hash.is_empty()
            && !self
                .verify(Client::default(), input.current_password, hash)
                .await?
        {
            self.guard.failed(&guessed, None);
            return Err(denied());
        }
        self.guard.succeeded(&guessed, None);
        let new_hash = self.hash(Client::default(), input.new_password).await?;
        store::set_password_hash(&self.pool, &me.user_id, &new_hash).await?;
        let revoked = self
            .end_sessions(&me.user_id, store::Devices::AllBut(&me.device_id))
            .await?;
        tracing::info!(user_id = %me.user_id, revoked, "password changed; other devices logged out");
        Ok(pb::ChangePasswordResponse {})
    }

    /// The caller's devices.
    async fn devices(&self, me: Identity) -> Result<pb::DevicesResponse, RpcError> {
        let rows = store::devices(&self.pool, &me.user_id).await?;
        let devices = rows
            .into_iter()
            .map(|row| pb::Device {
                current: row.id == me.device_id.as_str(),
                device_id: row.id,
                name: row.name,
                created_at_ms: row.created_at_ms,
                last_active_at_ms: row.last_login_at_ms,
                signed_in: row.signed_in != 0,
            })
            .collect();
        Ok(pb::DevicesResponse { devices })
    }

    /// Logs one of the caller's devices out, or every other one.
    async fn logout_device(
        &self,
        me: Identity,
        input: pb::LogoutDeviceRequest,
    ) -> Result<pb::LogoutDeviceResponse, RpcError> {
        self.logouts.check(&me.user_id.to_string())?;
        let devices = match (input.all_others, input.device_id.as_str()) {
            (true, "") => store::Devices::AllBut(&me.device_id),
            (false, "") => {
                return Err(RpcError::bad_request("give device_id, or all_others: true"));
            }
            (true, _) => {
                return Err(RpcError::bad_request(
                    "device_id and all_others: true exclude each other",
                ));
            }
            (false, device) => {
                let mine = subject::is_valid_token(device)
                    && store::owns_device(&self.pool, &me.user_id, device).await?;
                if !mine {
                    return Err(RpcError::not_found("no such device"));
                }
                store::Devices::Only(device)
            }
        };
        let revoked = self.end_sessions(&me.user_id, devices).await?;
        tracing::info!(user_id = %me.user_id, ?devices, revoked, "devices logged out");
        Ok(pb::LogoutDeviceResponse {})
    }

    /// Ends sessions: the devices' refresh tokens stop working, and every
    /// edge learns of it (`im.evt.v1.device.revoked`), closes their
    /// WebSockets and refuses their access tokens. Doing it again is
    /// harmless, so a failed announcement is an error the caller retries.
    async fn end_sessions(
        &self,
        user_id: &str,
        devices: store::Devices<'_>,
    ) -> Result<u64, RpcError> {
        let revoked = store::revoke(&self.pool, user_id, devices).await?;
        let at_ms = ids::now_ms();
        let (device_ids, every_device_but) = match devices {
            store::Devices::Only(device) => (vec![device.to_owned()], String::new()),
            store::Devices::AllBut(device) => (Vec::new(), device.to_owned()),
        };
        let event = pb::DevicesRevoked {
            user_id: user_id.to_owned(),
            device_ids,
            every_device_but,
            at_ms,
        };
        // Kept for edges that start later (their tokens may still be around).
        store::record_revocation(&self.pool, &event, at_ms - self.revocations_kept_ms()).await?;
        shared::nats::publish_event(
            &self.nats.jetstream,
            subject::event::DEVICES_REVOKED,
            prost::Message::encode_to_vec(&event).into(),
            &format!("revoked:{user_id}:{at_ms}:{}", ids::new_id()),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "device.revoked event not stored");
            RpcError::unavailable("logged out, but not every server heard yet: try again")
        })?;
        Ok(revoked)
    }

    /// How long an ended session matters: an access token issued before it
    /// lives at most this long (its lifetime and the edges' 30 s leeway).
    fn revocations_kept_ms(&self) -> i64 {
        (self.config.access_token_ttl_secs as i64 + 60) * 1000
    }

    /// Logs the caller's device out (its refresh token stops working).
    async fn logout(&self, me: Identity) -> Result<pb::LogoutResponse, RpcError> {
        self.logouts.check(&me.user_id.to_string())?;
        self.end_sessions(&me.user_id, store::Devices::Only(&me.device_id))
            .await?;
        tracing::info!(user_id = %me.user_id, device_id = %me.device_id, "device logged out");
        Ok(pb::LogoutResponse {})
    }

    async fn hash(&self, client: Client, password: String) -> Result<String, RpcError> {
        let _slot = self.guard.slot(client.ip).await?;
        tokio::task::spawn_blocking(move || hashing::hash(password.as_bytes()))
            .await
            .map_err(|e| internal("hash task", e))?
            .map_err(|e| internal("hash password", e))
    }

    async fn verify(
        &self,
        client: Client,
        password: String,
        hash: String,
    ) -> Result<bool, RpcError> {
        let _slot = self.guard.slot(client.ip).await?;
        tokio::task::spawn_blocking(move || hashing::verify(password.as_bytes(), &hash))
            .await
            .map_err(|e| internal("verify task", e))?
            .map_err(|e| internal("verify stored hash", e))
    }
}

/// The stored form of a refresh token's secret (hex SHA-256: the secret is
/// 256 random bits, so a fast hash is enough); also of a salted phone code.
pub(crate) fn hash_secret(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn account(row: store::AccountRow) -> pb::Account {
    pb::Account {
        user_id: row.id,
        username: row.username,
        nickname: row.nickname,
        created_at_ms: row.created_at_ms,
    }
}
