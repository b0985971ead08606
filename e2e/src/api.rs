//! A client of the edge's HTTP JSON API.

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::proto::auth::LoginResponse;

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// A registered user logged in on one device.
#[derive(Clone, Debug)]
pub struct User {
    pub username: String,
    pub password: String,
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub refresh_token: String,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// An API client whose requests come from `local` (any 127.x.y.z
    /// address reaches a loopback server): another client address, for
    /// limits per address.
    pub fn from_address(base: String, local: std::net::IpAddr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(local)
            .build()
            .expect("an HTTP client");
        Self { base, http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn ready(&self) -> bool {
        matches!(self.http.get(format!("{}/readyz", self.base)).send().await, Ok(r) if r.status().is_success())
    }

    /// POSTs a JSON body (or raw text) with an optional bearer token.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .header("content-type", "application/json");
        Self::json(request, token).await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        Self::json(self.http.delete(format!("{}{path}", self.base)), token).await
    }

    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        Self::json(self.http.get(format!("{}{path}", self.base)), token).await
    }

    async fn json(
        mut request: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        Ok((status, body))
    }

    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                "/v1/auth/register",
                None,
                json!({ "username": username, "password": password }).to_string(),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("register {username}: {status} {body}");
        }
        Ok(body["userId"].as_str().context("userId")?.to_owned())
    }

    /// One login attempt: its status, body and `Retry-After` (seconds).
    pub async fn login_attempt(
        &self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(StatusCode, Value, Option<u64>)> {
        let response = self
            .http
            .post(format!("{}/v1/auth/login", self.base))
            .header("content-type", "application/json")
            .body(json!({ "username": username, "password": password }).to_string())
            .send()
            .await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body, retry_after))
    }

    /// Logs in on a new device.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<User> {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                None,
                json!({ "username": username, "password": password, "deviceName": "e2e" })
                    .to_string(),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("login {username}: {status} {body}");
        }
        let login: LoginResponse = serde_json::from_value(body)?;
        Ok(User {
            username: username.into(),
            password: password.into(),
            user_id: login.user_id,
            device_id: login.device_id,
            token: login.access_token,
            refresh_token: login.refresh_token,
        })
    }

    /// Registers `username` and logs in on a first device.
    pub async fn user(&self, username: &str) -> anyhow::Result<User> {
        let password = format!("{username}-password");
        self.register(username, &password).await?;
        self.login(username, &password).await
    }

    /// The same user on another device.
    pub async fn another_device(&self, user: &User) -> anyhow::Result<User> {
        self.login(&user.username, &user.password).await
    }

    /// `owner` creates a group with `members`; fails unless it is created.
    pub async fn create_group(
        &self,
        owner: &User,
        name: &str,
        members: &[&User],
    ) -> anyhow::Result<Value> {
        let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let (status, body) = self
            .post(
                "/v1/groups",
                Some(&owner.token),
                json!({ "name": name, "description": "test", "memberIds": ids }).to_string(),
            )
            .await?;
        anyhow::ensure!(status == 201, "create group: {status} {body}");
        Ok(body)
    }

    /// A page of history (`query`: the URL's query string).
    pub async fn history(
        &self,
        user: &User,
        conversation_id: &str,
        query: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.get(
            &format!("/v1/conversations/{conversation_id}/messages?{query}"),
            Some(&user.token),
        )
        .await
    }

    /// PATCH, PUT and DELETE with an optional JSON body.
    pub async fn send_method(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .body(body.to_string())
                .header("content-type", "application/json");
        }
        Self::json(request, token).await
    }

    /// Sends a friend request; returns the response body.
    pub async fn request_friend(
        &self,
        from: &User,
        to: &User,
        greeting: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.post(
            "/v1/friends/requests",
            Some(&from.token),
            json!({ "toUserId": to.user_id, "greeting": greeting }).to_string(),
        )
        .await
    }

    /// `by` blocks `user` (`on`) or unblocks them; the HTTP status.
    pub async fn set_block(&self, by: &User, user: &User, on: bool) -> anyhow::Result<StatusCode> {
        let method = if on {
            reqwest::Method::PUT
        } else {
            reqwest::Method::DELETE
        };
        let path = format!("/v1/blocks/{}", user.user_id);
        Ok(self
            .send_method(method, &path, Some(&by.token), None)
            .await?
            .0)
    }

    /// Makes `a` and `b` friends: `a` asks, `b` accepts.
    pub async fn befriend(&self, a: &User, b: &User) -> anyhow::Result<()> {
        let (status, body) = self.request_friend(a, b, "hi").await?;
        if status != StatusCode::OK {
            bail!(
                "friend request {} -> {}: {status} {body}",
                a.username,
                b.username
            );
        }
        if body["becameFriends"].as_bool() == Some(true) {
            return Ok(());
        }
        let id = body["request"]["id"].as_str().context("request id")?;
        let (status, body) = self
            .post(
                &format!("/v1/friends/requests/{id}/accept"),
                Some(&b.token),
                "",
            )
            .await?;
        if status != StatusCode::OK {
            bail!("accept {} -> {}: {status} {body}", a.username, b.username);
        }
        Ok(())
    }
}
