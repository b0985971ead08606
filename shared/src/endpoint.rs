//! Typed endpoint contracts: one definition per NATS call endpoint (its
//! subject from [`crate::subject::call`], who may call it, its request and
//! reply types), one runner that serves a handler for it, and one typed call.
//!
//! A server registers `async fn(state, caller, request) -> Result<reply, RpcError>`
//! with [`Server::serve`]; the runner decodes the request, establishes the
//! caller (the identity headers for [`User`] endpoints, their absence for
//! [`Internal`] ones), runs the handler in a span named after the subject
//! with bounded concurrency, answers, and drains on shutdown. A client calls
//! [`crate::rpc::Caller::call_as`] (as a user) or
//! [`crate::rpc::Caller::call_to`] (internal and public endpoints).
//!
//! Endpoints are added in [`endpoints`] below; see ARCHITECTURE.md for a
//! whole example (definition, handler, route).

use std::future::Future;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::Service;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::rpc::{self, Identity, RpcError};

/// Sends in one `MessageSendBatch` request at most: the messages service
/// refuses more, and an edge's batcher fills batches up to it.
pub const SEND_BATCH_MAX_ITEMS: usize = 1024;

/// The kinds of [`Access`], for code that treats them alike (contract tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    User,
    Internal,
    Public,
    UserOrService,
}

/// Who may call an endpoint, and what the handler learns of the caller.
pub trait Access: Send + Sync + 'static {
    const KIND: AccessKind;
    /// What the handler is given.
    type Caller: Send + 'static;
    /// Reads (or refuses) the caller from a request's headers.
    fn caller(headers: Option<&HeaderMap>) -> Result<Self::Caller, RpcError>;
}

/// A user, through an edge: the handler gets the verified [`Identity`].
pub struct User;
/// Another service only: a call carrying a user identity is refused.
pub struct Internal;
/// A user through an edge, with where the call comes from: the handler gets
/// the verified [`Identity`] and the [`Client`](crate::rpc::Client) address,
/// for limits per address (phone-number searches).
pub struct UserAt;
/// Anyone (register, log in, refresh): no identity needed.
pub struct Public;
/// A user through an edge, or another service: the handler gets the
/// verified identity when there is one (a presence query answers a user
/// only about its friends, a service about anyone).
pub struct UserOrService;

impl Access for User {
    const KIND: AccessKind = AccessKind::User;
    type Caller = Identity;
    fn caller(headers: Option<&HeaderMap>) -> Result<Identity, RpcError> {
        Identity::from_headers(headers)
    }
}

impl Access for UserAt {
    const KIND: AccessKind = AccessKind::User;
    type Caller = (Identity, crate::rpc::Client);
    fn caller(headers: Option<&HeaderMap>) -> Result<Self::Caller, RpcError> {
        Ok((
            Identity::from_headers(headers)?,
            crate::rpc::Client::from_headers(headers),
        ))
    }
}

impl Access for Internal {
    const KIND: AccessKind = AccessKind::Internal;
    type Caller = ();
    fn caller(headers: Option<&HeaderMap>) -> Result<(), RpcError> {
        Identity::refuse_user(headers)
    }
}

impl Access for Public {
    const KIND: AccessKind = AccessKind::Public;
    /// Anyone: the handler gets where the call comes from (for limits).
    type Caller = crate::rpc::Client;
    fn caller(headers: Option<&HeaderMap>) -> Result<crate::rpc::Client, RpcError> {
        Ok(crate::rpc::Client::from_headers(headers))
    }
}

impl Access for UserOrService {
    const KIND: AccessKind = AccessKind::UserOrService;
    type Caller = Option<Identity>;
    fn caller(headers: Option<&HeaderMap>) -> Result<Option<Identity>, RpcError> {
        let asserted = headers.is_some_and(|h| h.get(crate::subject::header::USER_ID).is_some());
        asserted
            .then(|| Identity::from_headers(headers))
            .transpose()
    }
}

/// Marks the accesses a call may carry no identity to.
pub trait Anonymous: Access {}
impl Anonymous for Internal {}
impl Anonymous for Public {}
impl Anonymous for UserOrService {}

/// Marks the accesses a call may carry a user's identity to.
pub trait AsUser: Access {}
impl AsUser for User {}
impl AsUser for UserAt {}
impl AsUser for UserOrService {}

/// One NATS call endpoint.
pub trait Endpoint: 'static {
    /// The full subject, from [`crate::subject::call`]; its last token is the
    /// endpoint's name, the rest its micro service group.
    const SUBJECT: &'static str;
    type Access: Access;
    type Request: prost::Message + Default + Send + 'static;
    type Reply: prost::Message + Default + Send + 'static;

    /// `(group, name)` of the subject, as the micro service API registers it.
    fn parts() -> (&'static str, &'static str) {
        Self::SUBJECT
            .rsplit_once('.')
            .expect("a call subject has a group and a name")
    }
}

/// What a [`User`] handler is given as its caller.
pub type CallerOf<E> = <<E as Endpoint>::Access as Access>::Caller;

/// Serves one registered endpoint once it exists.
type Serving =
    Box<dyn FnOnce(async_nats::service::endpoint::Endpoint) -> BoxFuture<'static, ()> + Send>;

/// A micro service, the state its handlers share, and the endpoints it
/// serves: `Server::start(..).await?.serve::<E, _, _>(64, State::e).listen().await?`,
/// then [`Listening::run`].
pub struct Server<S> {
    service: Service,
    state: Arc<S>,
    shutdown: CancellationToken,
    endpoints: Vec<((&'static str, &'static str), Serving)>,
}

impl<S: Send + Sync + 'static> Server<S> {
    /// Starts micro service `name` (e.g. `natter-auth`, what `$SRV.INFO`
    /// shows) whose handlers share `state`.
    pub async fn start(
        client: &async_nats::Client,
        name: &str,
        description: &str,
        state: Arc<S>,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::Error> {
        use async_nats::service::ServiceExt;
        let service = client
            .service_builder()
            .description(description)
            .start(name, env!("CARGO_PKG_VERSION"))
            .await?;
        Ok(Self {
            service,
            state,
            shutdown,
            endpoints: Vec::new(),
        })
    }

    /// Adds endpoint `E` with its handler, served by [`Server::run`] with
    /// at most `concurrency` requests at once.
    pub fn serve<E, F, Fut>(mut self, concurrency: usize, handler: F) -> Self
    where
        E: Endpoint,
        F: Fn(Arc<S>, CallerOf<E>, E::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Reply, RpcError>> + Send + 'static,
    {
        let state = self.state.clone();
        let shutdown = self.shutdown.clone();
        let handler = Arc::new(handler);
        let serving: Serving = Box::new(move |endpoint| {
            Box::pin(crate::service::serve(
                endpoint,
                concurrency,
                shutdown,
                move |request| {
                    let state = state.clone();
                    let handler = handler.clone();
                    async move {
                        let caller = E::Access::caller(request.message.headers.as_ref())?;
                        let input = rpc::decode::<E::Request>(request.message.payload.clone())?;
                        handler(state, caller, input).await
                    }
                    .instrument(tracing::info_span!("call", subject = E::SUBJECT))
                },
            ))
        });
        self.endpoints.push((E::parts(), serving));
        self
    }

    /// Registers every endpoint with the micro service: from now on its
    /// subjects have responders (and `$SRV.INFO` lists them).
    pub async fn listen(self) -> Result<Listening, async_nats::Error> {
        let mut serving = Vec::with_capacity(self.endpoints.len());
        for ((group, name), serve) in self.endpoints {
            let endpoint = self.service.group(group).endpoint(name).await?;
            serving.push(serve(endpoint));
        }
        Ok(Listening {
            service: self.service,
            serving,
        })
    }
}

/// A micro service whose endpoints are registered.
pub struct Listening {
    service: Service,
    serving: Vec<BoxFuture<'static, ()>>,
}

impl Listening {
    /// Serves until shutdown, lets the requests in flight finish, then stops
    /// the micro service.
    pub async fn run(self) {
        futures::future::join_all(self.serving).await;
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "stopping service");
        }
    }
}

/// Defines endpoint types: `Name: SUBJECT, Access, Request => Reply;`.
macro_rules! endpoints {
    ($($(#[$doc:meta])* $name:ident: $subject:ident, $access:ident, $req:ty => $reply:ty;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl Endpoint for $name {
                const SUBJECT: &'static str = crate::subject::call::$subject;
                type Access = $access;
                type Request = $req;
                type Reply = $reply;
            }
        )*
    };
}

/// Every endpoint (services migrate to these definitions one by one; see
/// ARCHITECTURE.md).
pub mod endpoints {
    use super::{Endpoint, Internal, Public, User, UserAt, UserOrService};
    use crate::proto::{auth, file, group, message, presence, search, social};

    endpoints! {
        /// Create an account.
        AuthRegister: AUTH_REGISTER, Public, auth::RegisterRequest => auth::RegisterResponse;
        /// Log in with a password (a new device, or `device_id` again).
        AuthLogin: AUTH_LOGIN, Public, auth::LoginRequest => auth::LoginResponse;
        /// Exchange a refresh token for new tokens.
        AuthRefresh: AUTH_REFRESH, Public, auth::RefreshRequest => auth::LoginResponse;
        /// Log the calling device out.
        AuthLogout: AUTH_LOGOUT, User, auth::LogoutRequest => auth::LogoutResponse;
        /// Change the caller's password (and log out its other devices).
        AuthPassword: AUTH_PASSWORD, User, auth::ChangePasswordRequest => auth::ChangePasswordResponse;
        /// The caller's devices.
        AuthDevices: AUTH_DEVICES, User, auth::DevicesRequest => auth::DevicesResponse;
        /// Log one of the caller's devices out, or every other one.
        AuthLogoutDevice: AUTH_LOGOUT_DEVICE, User, auth::LogoutDeviceRequest => auth::LogoutDeviceResponse;
        /// Send a login code to a phone number.
        AuthPhoneCode: AUTH_PHONE_CODE, Public, auth::PhoneCodeRequest => auth::PhoneCodeResponse;
        /// Log in with a phone number and its code.
        AuthPhoneLogin: AUTH_PHONE_LOGIN, Public, auth::PhoneLoginRequest => auth::LoginResponse;
        /// Create an account for a phone number (proven by its code) and log in.
        AuthPhoneRegister: AUTH_PHONE_REGISTER, Public, auth::PhoneRegisterRequest => auth::LoginResponse;
        /// Change the caller's phone number (and log out its other devices).
        AuthChangePhone: AUTH_CHANGE_PHONE, User, auth::ChangePhoneRequest => auth::ChangePhoneResponse;
        /// The public keys that verify access tokens (for edges).
        AuthKeys: AUTH_KEYS, Internal, auth::PublicKeysRequest => auth::PublicKeysResponse;
        /// Sessions ended within an access token's lifetime (for edges that start).
        AuthRevocations: AUTH_REVOCATIONS, Internal, auth::RevocationsRequest => auth::RevocationsResponse;
        /// Which user ids exist, with their public account fields.
        AuthLookup: AUTH_LOOKUP, Internal, auth::LookupRequest => auth::LookupResponse;
        /// The account with an exact phone number.
        AuthPhone: AUTH_PHONE, Internal, auth::PhoneLookupRequest => auth::PhoneLookupResponse;
        /// Which users have more than one device.
        AuthMultipleDevices: AUTH_MULTIPLE_DEVICES, Internal, auth::MultipleDevicesRequest => auth::MultipleDevicesResponse;
        /// Create a group (the caller owns it).
        GroupCreate: GROUP_CREATE, User, group::CreateGroupRequest => group::Group;
        /// A group, for its members.
        GroupGet: GROUP_GET, User, group::GroupRequest => group::Group;
        /// The caller's groups.
        GroupMine: GROUP_MINE, User, group::MyGroupsRequest => group::MyGroupsResponse;
        /// A page of a group's members.
        GroupMembers: GROUP_MEMBERS, User, group::ListMembersRequest => group::ListMembersResponse;
        /// Add members (owner and admins).
        GroupInvite: GROUP_INVITE, User, group::MembersRequest => group::Group;
        /// Remove members.
        GroupRemove: GROUP_REMOVE, User, group::MembersRequest => group::Group;
        /// Leave a group.
        GroupLeave: GROUP_LEAVE, User, group::GroupRequest => group::Empty;
        /// Change a member's role (owner).
        GroupRole: GROUP_ROLE, User, group::SetRoleRequest => group::Group;
        /// Hand ownership to a member (owner).
        GroupTransfer: GROUP_TRANSFER, User, group::TransferRequest => group::Group;
        /// Rename, describe, announce.
        GroupUpdate: GROUP_UPDATE, User, group::UpdateGroupRequest => group::Group;
        /// Mute a member or the whole group.
        GroupMute: GROUP_MUTE, User, group::MuteRequest => group::Group;
        /// End a group (owner).
        GroupDismiss: GROUP_DISMISS, User, group::GroupRequest => group::Empty;
        /// Profiles by user id (the caller's own when none given).
        /// Begin an upload (tus creation).
        FileUploadCreate: FILE_UPLOAD_CREATE, User, file::CreateUploadRequest => file::Upload;
        /// Where one of the caller's uploads stands (tus HEAD).
        FileUploadStatus: FILE_UPLOAD_STATUS, User, file::UploadRef => file::Upload;
        /// Bytes of one of the caller's uploads at its offset (tus PATCH,
        /// a chunk at a time); the last completes the file.
        FileUploadWrite: FILE_UPLOAD_WRITE, User, file::WriteRequest => file::Upload;
        /// Drop one of the caller's unfinished uploads (tus termination).
        FileUploadDelete: FILE_UPLOAD_DELETE, User, file::UploadRef => file::DeleteUploadReply;
        /// What a file the caller may read is.
        FileInfo: FILE_INFO, User, file::FileRef => file::FileInfo;
        /// Bytes of a file the caller may read.
        FileRead: FILE_READ, User, file::ReadRequest => file::ReadReply;
        /// What some files are, for the messages service's check of a send.
        FileDescribe: FILE_DESCRIBE, Internal, file::DescribeRequest => file::DescribeReply;
        ProfileGet: PROFILE_GET, User, social::GetProfilesRequest => social::GetProfilesResponse;
        /// Change the caller's profile.
        ProfileUpdate: PROFILE_UPDATE, User, social::UpdateProfileRequest => social::Profile;
        /// Which of some files are someone's avatar.
        ProfileAvatarsUsed: PROFILE_AVATARS_USED, Internal, file::FileIds => file::FileIds;
        /// Find users by username, nickname or exact phone.
        UserSearch: USER_SEARCH, UserAt, social::SearchRequest => social::SearchResponse;
        /// Ask a user to be friends.
        FriendAsk: FRIEND_REQUEST, User, social::SendFriendRequestRequest => social::SendFriendRequestResponse;
        /// The caller's friend requests, in or out.
        FriendRequests: FRIEND_REQUESTS, User, social::ListFriendRequestsRequest => social::ListFriendRequestsResponse;
        /// Accept a friend request.
        FriendAccept: FRIEND_ACCEPT, User, social::AnswerFriendRequestRequest => social::AnswerFriendRequestResponse;
        /// Reject a friend request.
        FriendReject: FRIEND_REJECT, User, social::AnswerFriendRequestRequest => social::AnswerFriendRequestResponse;
        /// A page of the caller's friends, with presence.
        FriendList: FRIEND_LIST, User, social::ListFriendsRequest => social::ListFriendsResponse;
        /// End a friendship.
        FriendDelete: FRIEND_DELETE, User, social::UserRequest => social::Empty;
        /// How two users relate (friends, blocks).
        FriendRelation: FRIEND_RELATION, Internal, social::RelationRequest => social::RelationResponse;
        /// Who may see a user's presence.
        FriendAudience: FRIEND_AUDIENCE, Internal, social::AudienceRequest => social::AudienceResponse;
        /// Whose presence a viewer may see.
        FriendVisible: FRIEND_VISIBLE, Internal, social::VisibleRequest => social::VisibleResponse;
        /// Block a user.
        BlockAdd: BLOCK_ADD, User, social::UserRequest => social::Empty;
        /// Unblock a user.
        BlockRemove: BLOCK_REMOVE, User, social::UserRequest => social::Empty;
        /// The users the caller blocked.
        BlockList: BLOCK_LIST, User, social::Empty => social::ListBlockedResponse;
        /// Send a message (one-to-one or to a group).
        MessageSend: MESSAGE_SEND, User, message::SendRequest => message::SendAck;
        /// The sends an edge collected, each with the identity it verified.
        MessageSendBatch: MESSAGE_SEND_BATCH, Internal, message::SendBatchRequest => message::SendBatchResponse;
        /// A page of a conversation's history.
        MessageHistory: MESSAGE_HISTORY, User, message::HistoryRequest => message::HistoryResponse;
        /// Recall a message for everyone.
        MessageRecall: MESSAGE_RECALL, User, message::RecallRequest => message::MessageRecalled;
        /// Hide messages from the caller's own history.
        MessageDelete: MESSAGE_DELETE, User, message::DeleteRequest => message::MessagesDeleted;
        /// Who has read a message.
        MessageReads: MESSAGE_READS, User, message::ReadsRequest => message::ReadsResponse;
        /// Whether a user may read a file through a message it can see.
        MessageFileAccess: MESSAGE_FILE_ACCESS, Internal, message::FileAccessRequest => message::FileAccessReply;
        /// Which of some files a message (not recalled) references.
        MessageFilesUsed: MESSAGE_FILES_USED, Internal, file::FileIds => file::FileIds;
        /// Attach a voice message's transcript (for the speech service).
        MessageTranscript: MESSAGE_TRANSCRIPT, Internal, message::TranscriptRequest => message::MessageTranscribed;
        /// A voice message's transcript, now (made if it has none).
        MessageTranscribe: MESSAGE_TRANSCRIBE, User, message::TranscribeRequest => message::MessageTranscribed;
        /// Hear a voice message (the speech service; for messages).
        SpeechTranscribe: SPEECH_TRANSCRIBE, Internal, message::SpeechRequest => message::SpeechReply;
        /// The conversations a user may search, each with its read window (for search).
        MessageSearchScope: MESSAGE_SEARCH_SCOPE, Internal, message::SearchScopeRequest => message::SearchScopeReply;
        /// Which of some messages a user may read now, as they are now (for search).
        MessageVisible: MESSAGE_VISIBLE, Internal, message::VisibleRequest => message::VisibleReply;
        /// Every stored message, a page at a time (what a search index is rebuilt from).
        MessageExport: MESSAGE_EXPORT, Internal, message::ExportRequest => message::ExportReply;
        /// The caller's messages that hold some words.
        SearchMessages: SEARCH_MESSAGES, User, search::SearchMessagesRequest => search::SearchMessagesResponse;
        /// The caller's groups and friends by name (pinyin too).
        SearchConversations: SEARCH_CONVERSATIONS, User, search::SearchConversationsRequest => search::SearchConversationsResponse;
        /// Where the search index stands.
        SearchStatus: SEARCH_STATUS, Internal, search::IndexStatusRequest => search::IndexStatus;
        /// Empty the search index and rebuild it from the messages service.
        SearchReindex: SEARCH_REINDEX, Internal, search::ReindexRequest => search::IndexStatus;
        /// A page of the caller's conversations.
        ConversationList: CONVERSATION_LIST, User, message::ConversationsRequest => message::ConversationsResponse;
        /// Move the caller's read position.
        ConversationRead: CONVERSATION_READ, User, message::ReadRequest => message::ReadResponse;
        /// Pin or mute a conversation for the caller.
        ConversationSettings: CONVERSATION_SETTINGS, User, message::SettingsRequest => message::SettingsChanged;
        /// Tell the others the caller is typing.
        ConversationTyping: CONVERSATION_TYPING, User, message::TypingRequest => message::Empty;
        /// The caller's large groups (read fan-out), for its edge.
        ConversationLarge: CONVERSATION_LARGE, User, message::LargeGroupsRequest => message::LargeGroupsResponse;
        /// The last seq of some large groups, for the edges' check.
        ConversationHeads: CONVERSATION_HEADS, Internal, message::GroupHeadsRequest => message::LargeGroupsResponse;
        /// The groups service brings a group conversation in step.
        ConversationApply: CONVERSATION_APPLY, Internal, message::ConversationChange => message::ConversationChangeAck;
        /// An edge reports a device online or offline.
        PresenceStatus: PRESENCE_STATUS, Internal, presence::DeviceStatus => presence::HeartbeatAck;
        /// An edge refreshes its online devices.
        PresenceHeartbeat: PRESENCE_HEARTBEAT, Internal, presence::Heartbeat => presence::HeartbeatAck;
        /// Presence of some users (a user may ask about itself and its friends).
        PresenceQuery: PRESENCE_QUERY, UserOrService, presence::QueryRequest => presence::QueryResponse;
    }
}

#[cfg(test)]
mod tests {
    use super::endpoints::*;
    use super::*;

    #[test]
    fn an_endpoint_splits_its_subject_into_group_and_name() {
        assert_eq!(AuthLogin::parts(), ("im.v1.auth", "login"));
        assert_eq!(AuthLogout::parts(), ("im.v1.auth", "logout"));
    }

    #[test]
    fn internal_endpoints_refuse_a_user_and_user_endpoints_require_one() {
        let mut user = HeaderMap::new();
        user.insert(crate::subject::header::USER_ID, "u1");
        user.insert(crate::subject::header::DEVICE_ID, "d1");
        assert!(Internal::caller(Some(&user)).is_err());
        assert!(Internal::caller(None).is_ok());
        assert_eq!(User::caller(Some(&user)).unwrap().user_id, "u1");
        assert!(User::caller(None).is_err());
        assert!(Public::caller(Some(&user)).is_ok());
        assert_eq!(
            UserOrService::caller(Some(&user))
                .unwrap()
                .map(|me| me.user_id.to_string()),
            Some("u1".to_owned())
        );
        assert_eq!(UserOrService::caller(None).unwrap(), None);
        let mut forged = HeaderMap::new();
        forged.insert(crate::subject::header::USER_ID, "u1");
        assert!(UserOrService::caller(Some(&forged)).is_err());
    }
}
