//! The files of a message: a send may reference only files its sender may
//! use (its own uploads, or files of messages it can read: forwarding),
//! of the kind the body says; what the files service knows of them (size,
//! type) replaces what the client wrote. Whoever can read the message can
//! then read its files: the files service asks [`State::file_access`].

use std::collections::HashMap;
use std::sync::Arc;

use shared::RpcError;
use shared::endpoint::endpoints::FileDescribe;
use shared::proto::file::{DescribeRequest, FileIds, FileInfo};
use shared::proto::message as pb;
use shared::rpc::Identity;

use super::State;
use crate::store;

/// Which stored kinds a reference accepts (`None`: any but an avatar).
#[derive(Clone, Copy)]
struct Wants {
    kind: Option<&'static str>,
}

const ANY: Wants = Wants { kind: None };
const IMAGE: Wants = Wants {
    kind: Some("image"),
};

/// The file ids `body` references, each with the kind it must have.
fn references(body: &pb::MessageBody) -> Vec<(&str, Wants)> {
    use pb::message_body::Kind;
    let mut refs = Vec::new();
    match &body.kind {
        Some(Kind::Image(image)) => {
            refs.push((image.file_id.as_str(), IMAGE));
            refs.push((image.thumbnail_file_id.as_str(), IMAGE));
        }
        Some(Kind::Voice(voice)) => refs.push((
            voice.file_id.as_str(),
            Wants {
                kind: Some("voice"),
            },
        )),
        Some(Kind::Video(video)) => {
            refs.push((
                video.file_id.as_str(),
                Wants {
                    kind: Some("video"),
                },
            ));
            refs.push((video.thumbnail_file_id.as_str(), IMAGE));
        }
        Some(Kind::File(file)) => refs.push((file.file_id.as_str(), ANY)),
        _ => {}
    }
    refs.retain(|(id, _)| !id.is_empty());
    refs
}

impl State {
    /// Checks that `me` may use the files `body` references and fills in
    /// their size and type; returns their ids (stored with the message).
    pub(super) async fn attach_files(
        &self,
        me: &Identity,
        body: &mut pb::MessageBody,
    ) -> Result<Vec<String>, RpcError> {
        let refs = references(body);
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = refs.iter().map(|(id, _)| (*id).to_owned()).collect();
        let known: HashMap<String, FileInfo> = self
            .caller
            .call_to::<FileDescribe>(&DescribeRequest {
                file_ids: ids.clone(),
            })
            .await?
            .files
            .into_iter()
            .map(|f| (f.file_id.clone(), f))
            .collect();
        for (id, wants) in &refs {
            let file = known.get(*id).ok_or_else(no_file)?;
            // Whether it may be used first, so a file one may not use
            // tells nothing of itself (the same answer as for no file).
            if file.owner_id != me.user_id.as_str()
                && !store::file_readable(&self.pool, &me.user_id, id).await?
            {
                return Err(no_file());
            }
            let fits = match wants.kind {
                Some(kind) => file.kind == kind,
                None => file.kind != "avatar",
            };
            if !fits {
                return Err(RpcError::bad_request(format!(
                    "file {id} is a {}, which this message cannot carry",
                    file.kind
                )));
            }
        }
        fill(body, &known);
        Ok(ids)
    }

    /// Whether a user may read a file through a message (for the files
    /// service).
    pub(super) async fn file_access(
        self: Arc<Self>,
        _: (),
        input: pb::FileAccessRequest,
    ) -> Result<pb::FileAccessReply, RpcError> {
        Ok(pb::FileAccessReply {
            readable: store::file_readable(&self.pool, &input.user_id, &input.file_id).await?,
        })
    }
}

impl State {
    /// Which of some files a message references (for the files service's
    /// sweep of files nothing uses).
    pub(super) async fn files_used(
        self: Arc<Self>,
        _: (),
        input: FileIds,
    ) -> Result<FileIds, RpcError> {
        if input.file_ids.len() > MAX_FILES_ASKED {
            return Err(RpcError::bad_request(format!(
                "at most {MAX_FILES_ASKED} files at a time"
            )));
        }
        Ok(FileIds {
            file_ids: store::files_used(&self.pool, &input.file_ids).await?,
        })
    }
}

/// The most files one `files_used` asks about.
const MAX_FILES_ASKED: usize = 200;

/// Size and type from the stored files, over what the client wrote; an
/// image's size, a recording's length and a video's size and length where
/// the files service read them.
fn fill(body: &mut pb::MessageBody, known: &HashMap<String, FileInfo>) {
    use pb::message_body::Kind;
    let Some(kind) = body.kind.as_mut() else {
        return;
    };
    match kind {
        Kind::Image(i) => {
            if let Some(f) = known.get(&i.file_id)
                && f.width > 0
            {
                (i.width, i.height) = (f.width, f.height);
            }
        }
        Kind::Voice(v) => {
            if let Some(f) = known.get(&v.file_id)
                && f.duration_ms > 0
            {
                v.duration_ms = f.duration_ms;
            }
        }
        // What the video's container told the files service; the rest is
        // the sender's.
        Kind::Video(v) => {
            if let Some(f) = known.get(&v.file_id) {
                if f.width > 0 && f.height > 0 {
                    (v.width, v.height) = (f.width, f.height);
                }
                if f.duration_ms > 0 {
                    v.duration_ms = f.duration_ms;
                }
            }
        }
        _ => {}
    }
    let (id, size, mime) = match kind {
        Kind::Image(i) => (&i.file_id, &mut i.size_bytes, &mut i.mime_type),
        Kind::Voice(v) => (&v.file_id, &mut v.size_bytes, &mut v.mime_type),
        Kind::Video(v) => (&v.file_id, &mut v.size_bytes, &mut v.mime_type),
        Kind::File(f) => (&f.file_id, &mut f.size_bytes, &mut f.mime_type),
        _ => return,
    };
    if let Some(file) = known.get(id.as_str()) {
        *size = file.size;
        *mime = file.media_type.clone();
    }
}

fn no_file() -> RpcError {
    RpcError::not_found("no such file, or not yours to send")
}
