//! The rules of groups, as pure functions: given a group, the caller's and
//! the targets' memberships and an operation, what changes (or why not).
//! The service runs them inside the transaction that writes the result.

use std::collections::HashMap;

use shared::RpcError;
pub use shared::group::{NoticeKind, Role};

pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 500;
pub const ANNOUNCEMENT_MAX: usize = 2000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    pub announcement: String,
    pub owner_id: String,
    pub muted_all: bool,
    pub max_members: i64,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    pub muted_until_ms: i64,
    pub joined_at_ms: i64,
}

/// What a caller asks for (creation is planned by [`create`]).
#[derive(Clone, Debug)]
pub enum Op {
    Invite(Vec<String>),
    Remove(Vec<String>),
    Leave,
    SetRole {
        user: String,
        role: Role,
    },
    Transfer(String),
    Update {
        name: Option<String>,
        description: Option<String>,
        announcement: Option<String>,
    },
    /// One member (`Some`) or the whole group; `until_ms` 0 = unmute.
    Mute {
        user: Option<String>,
        until_ms: i64,
    },
    Dismiss,
}

/// The fields of a group a change sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub announcement: Option<String>,
    pub owner_id: Option<String>,
    pub muted_all: Option<bool>,
    pub dismissed: bool,
}

/// The outcome of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Members added or changed, in their new state.
    pub upserts: Vec<Member>,
    /// Members who leave.
    pub removals: Vec<String>,
    pub group: GroupUpdate,
    /// The system notice kind (its event follows from it).
    pub notice: NoticeKind,
    /// Whom the notice concerns.
    pub user_ids: Vec<String>,
    /// Text of the notice (new name, announcement, role).
    pub text: String,
}

impl Plan {
    fn new(notice: NoticeKind) -> Self {
        Self {
            upserts: Vec::new(),
            removals: Vec::new(),
            group: GroupUpdate::default(),
            notice,
            user_ids: Vec::new(),
            text: String::new(),
        }
    }
}

/// The name, description and announcement rules.
pub fn name(text: &str) -> Result<&str, RpcError> {
    let name = shared::text::display("name", text, NAME_MAX)?;
    if name.is_empty() {
        return Err(RpcError::bad_request("name is empty"));
    }
    Ok(name)
}

pub fn description(text: &str) -> Result<&str, RpcError> {
    shared::text::display("description", text, DESCRIPTION_MAX)
}

/// Announcements may have several lines.
pub fn announcement(text: &str) -> Result<&str, RpcError> {
    let text = text.trim();
    if text.chars().count() > ANNOUNCEMENT_MAX {
        return Err(RpcError::bad_request(format!(
            "announcement must be at most {ANNOUNCEMENT_MAX} characters"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(RpcError::bad_request(
            "announcement must not contain control characters",
        ));
    }
    Ok(text)
}

/// A new group: the creator owns it, the others are members.
pub fn create(
    creator: &str,
    members: &[String],
    max_members: i64,
    now_ms: i64,
) -> Result<Plan, RpcError> {
    let mut others: Vec<String> = members.iter().filter(|m| *m != creator).cloned().collect();
    others.sort();
    others.dedup();
    if others.len() as i64 + 1 > max_members {
        return Err(RpcError::conflict(format!(
            "a group may have at most {max_members} members"
        )));
    }
    let mut plan = Plan::new(NoticeKind::Created);
    plan.upserts.push(Member {
        user_id: creator.to_owned(),
        role: Role::Owner,
        muted_until_ms: 0,
        joined_at_ms: now_ms,
    });
    plan.upserts.extend(others.iter().map(|id| Member {
        user_id: id.clone(),
        role: Role::Member,
        muted_until_ms: 0,
        joined_at_ms: now_ms,
    }));
    plan.user_ids = others;
    Ok(plan)
}

fn not_member() -> RpcError {
    RpcError::forbidden("not a member of this group")
}

/// Plans `op` by `actor` on `group`. `members` holds the current rows of
/// the actor and of every user the operation names (absent = not a member);
/// `count` is the current number of members.
pub fn plan(
    group: &Group,
    actor: &str,
    op: &Op,
    members: &HashMap<String, Member>,
    count: i64,
    now_ms: i64,
) -> Result<Plan, RpcError> {
    let me = members.get(actor).ok_or_else(not_member)?;
    let need_manager = || {
        if me.role.manages() {
            Ok(())
        } else {
            Err(RpcError::forbidden("only the owner and admins may do this"))
        }
    };
    let need_owner = || {
        if me.role == Role::Owner {
            Ok(())
        } else {
            Err(RpcError::forbidden("only the owner may do this"))
        }
    };
    let target = |user: &str| -> Result<&Member, RpcError> {
        members
            .get(user)
            .ok_or_else(|| RpcError::not_found("that user is not a member of this group"))
    };
    match op {
        Op::Invite(users) => {
            need_manager()?;
            let mut new: Vec<String> = users
                .iter()
                .filter(|u| !members.contains_key(*u))
                .cloned()
                .collect();
            new.sort();
            new.dedup();
            if new.is_empty() {
                return Err(RpcError::conflict("already members"));
            }
            if count + new.len() as i64 > group.max_members {
                return Err(RpcError::conflict(format!(
                    "a group may have at most {} members",
                    group.max_members
                )));
            }
            let mut plan = Plan::new(NoticeKind::MemberAdded);
            plan.upserts = new
                .iter()
                .map(|id| Member {
                    user_id: id.clone(),
                    role: Role::Member,
                    muted_until_ms: 0,
                    joined_at_ms: now_ms,
                })
                .collect();
            plan.user_ids = new;
            Ok(plan)
        }
        Op::Remove(users) => {
            need_manager()?;
            let mut gone = Vec::new();
            for user in users {
                if user == actor {
                    return Err(RpcError::bad_request("to leave, use leave"));
                }
                let member = target(user)?;
                // Admins remove members; the owner removes anyone.
                if member.role >= me.role {
                    return Err(RpcError::forbidden(
                        "admins may only remove members; the owner cannot be removed",
                    ));
                }
                gone.push(user.clone());
            }
            gone.sort();
            gone.dedup();
            if gone.is_empty() {
                return Err(RpcError::bad_request("name at least one member"));
            }
            let mut plan = Plan::new(NoticeKind::MemberRemoved);
            plan.removals = gone.clone();
            plan.user_ids = gone;
            Ok(plan)
        }
        Op::Leave => {
            if me.role == Role::Owner {
                return Err(RpcError::conflict(
                    "the owner must transfer ownership before leaving",
                ));
            }
            let mut plan = Plan::new(NoticeKind::MemberLeft);
            plan.removals = vec![actor.to_owned()];
            plan.user_ids = vec![actor.to_owned()];
            Ok(plan)
        }
        Op::SetRole { user, role } => {
            need_owner()?;
            if *role == Role::Owner {
                return Err(RpcError::bad_request("to change the owner, use transfer"));
            }
            if user == actor {
                return Err(RpcError::bad_request(
                    "the owner's role changes by transfer",
                ));
            }
            let member = target(user)?;
            if member.role == *role {
                return Err(RpcError::conflict(format!("already {}", role.as_str())));
            }
            let mut plan = Plan::new(NoticeKind::RoleChanged);
            plan.upserts.push(Member {
                role: *role,
                ..member.clone()
            });
            plan.user_ids = vec![user.clone()];
            plan.text = role.as_str().to_owned();
            Ok(plan)
        }
        Op::Transfer(user) => {
            need_owner()?;
            if user == actor {
                return Err(RpcError::bad_request("you own this group already"));
            }
            let member = target(user)?;
            let mut plan = Plan::new(NoticeKind::OwnerChanged);
            plan.upserts.push(Member {
                role: Role::Owner,
                muted_until_ms: 0,
                ..member.clone()
            });
            plan.upserts.push(Member {
                role: Role::Admin,
                ..me.clone()
            });
            plan.group.owner_id = Some(user.clone());
            plan.user_ids = vec![user.clone()];
            Ok(plan)
        }
        Op::Update {
            name: new_name,
            description: new_description,
            announcement: new_announcement,
        } => {
            need_manager()?;
            let name = new_name.as_deref().map(name).transpose()?;
            let description = new_description.as_deref().map(description).transpose()?;
            let announcement = new_announcement.as_deref().map(announcement).transpose()?;
            if name.is_none() && description.is_none() && announcement.is_none() {
                return Err(RpcError::bad_request("nothing to update"));
            }
            let mut plan = match (name, announcement) {
                (Some(name), _) => {
                    let mut plan = Plan::new(NoticeKind::Renamed);
                    plan.text = name.to_owned();
                    plan
                }
                (None, Some(text)) => {
                    let mut plan = Plan::new(NoticeKind::Announcement);
                    plan.text = text.to_owned();
                    plan
                }
                (None, None) => Plan::new(NoticeKind::Updated),
            };
            plan.group.name = name.map(str::to_owned);
            plan.group.description = description.map(str::to_owned);
            plan.group.announcement = announcement.map(str::to_owned);
            Ok(plan)
        }
        Op::Mute {
            user: None,
            until_ms,
        } => {
            need_manager()?;
            let muted = *until_ms > 0;
            if muted == group.muted_all {
                return Err(RpcError::conflict(if muted {
                    "the group is muted already"
                } else {
                    "the group is not muted"
                }));
            }
            let mut plan = if muted {
                Plan::new(NoticeKind::MutedAll)
            } else {
                Plan::new(NoticeKind::UnmutedAll)
            };
            plan.group.muted_all = Some(muted);
            Ok(plan)
        }
        Op::Mute {
            user: Some(user),
            until_ms,
        } => {
            need_manager()?;
            let member = target(user)?;
            if member.role.manages() {
                return Err(RpcError::forbidden("the owner and admins cannot be muted"));
            }
            let mut plan = if *until_ms > 0 {
                Plan::new(NoticeKind::Muted)
            } else {
                Plan::new(NoticeKind::Unmuted)
            };
            plan.upserts.push(Member {
                muted_until_ms: *until_ms,
                ..member.clone()
            });
            plan.user_ids = vec![user.clone()];
            Ok(plan)
        }
        Op::Dismiss => {
            need_owner()?;
            let mut plan = Plan::new(NoticeKind::Dismissed);
            plan.group.dismissed = true;
            Ok(plan)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        Group {
            id: "g".into(),
            name: "家人".into(),
            description: String::new(),
            announcement: String::new(),
            owner_id: "o".into(),
            muted_all: false,
            max_members: 4,
            created_at_ms: 1,
        }
    }

    fn members(list: &[(&str, Role)]) -> HashMap<String, Member> {
        list.iter()
            .map(|(id, role)| {
                (
                    id.to_string(),
                    Member {
                        user_id: id.to_string(),
                        role: *role,
                        muted_until_ms: 0,
                        joined_at_ms: 1,
                    },
                )
            })
            .collect()
    }

    fn code(result: Result<Plan, RpcError>) -> &'static str {
        result.err().map(|e| e.code.as_str()).unwrap_or("ok")
    }

    #[test]
    fn only_managers_invite_and_remove_and_admins_remove_members_only() {
        let g = group();
        let m = members(&[("o", Role::Owner), ("a", Role::Admin), ("m", Role::Member)]);
        let invite = Op::Invite(vec!["x".into()]);
        assert_eq!(code(plan(&g, "m", &invite, &m, 3, 0)), "forbidden");
        assert_eq!(code(plan(&g, "a", &invite, &m, 3, 0)), "ok");
        assert_eq!(
            code(plan(&g, "m", &Op::Remove(vec!["a".into()]), &m, 3, 0)),
            "forbidden"
        );
        assert_eq!(
            code(plan(&g, "a", &Op::Remove(vec!["m".into()]), &m, 3, 0)),
            "ok"
        );
        assert_eq!(
            code(plan(&g, "a", &Op::Remove(vec!["o".into()]), &m, 3, 0)),
            "forbidden"
        );
        assert_eq!(
            code(plan(&g, "o", &Op::Remove(vec!["a".into()]), &m, 3, 0)),
            "ok"
        );
        assert_eq!(
            code(plan(&g, "x", &invite, &m, 3, 0)),
            "forbidden",
            "non-member"
        );
    }

    #[test]
    fn the_size_limit_holds() {
        let g = group();
        let m = members(&[("o", Role::Owner)]);
        let three = Op::Invite(vec!["x".into(), "y".into(), "z".into()]);
        assert_eq!(code(plan(&g, "o", &three, &m, 1, 0)), "ok");
        let four = Op::Invite(vec!["w".into(), "x".into(), "y".into(), "z".into()]);
        assert_eq!(code(plan(&g, "o", &four, &m, 1, 0)), "conflict");
        assert!(create("o", &["a".into(), "b".into(), "c".into()], 4, 0).is_ok());
        assert!(create("o", &["a".into(), "b".into(), "c".into(), "d".into()], 4, 0).is_err());
    }

    #[test]
    fn the_owner_transfers_before_leaving() {
        let g = group();
        let m = members(&[("o", Role::Owner), ("m", Role::Member)]);
        assert_eq!(code(plan(&g, "o", &Op::Leave, &m, 2, 0)), "conflict");
        assert_eq!(code(plan(&g, "m", &Op::Leave, &m, 2, 0)), "ok");
        let p = plan(&g, "o", &Op::Transfer("m".into()), &m, 2, 0).unwrap();
        assert_eq!(p.group.owner_id.as_deref(), Some("m"));
        let roles: Vec<_> = p
            .upserts
            .iter()
            .map(|u| (u.user_id.as_str(), u.role))
            .collect();
        assert_eq!(roles, [("m", Role::Owner), ("o", Role::Admin)]);
        assert_eq!(
            code(plan(&g, "m", &Op::Transfer("o".into()), &m, 2, 0)),
            "forbidden"
        );
    }

    #[test]
    fn roles_and_mutes() {
        let g = group();
        let m = members(&[("o", Role::Owner), ("a", Role::Admin), ("m", Role::Member)]);
        let promote = Op::SetRole {
            user: "m".into(),
            role: Role::Admin,
        };
        assert_eq!(code(plan(&g, "a", &promote, &m, 3, 0)), "forbidden");
        assert_eq!(code(plan(&g, "o", &promote, &m, 3, 0)), "ok");
        let mute_admin = Op::Mute {
            user: Some("a".into()),
            until_ms: 10,
        };
        assert_eq!(code(plan(&g, "o", &mute_admin, &m, 3, 0)), "forbidden");
        let mute = Op::Mute {
            user: Some("m".into()),
            until_ms: 10,
        };
        assert_eq!(
            plan(&g, "a", &mute, &m, 3, 0).unwrap().upserts[0].muted_until_ms,
            10
        );
        let all = Op::Mute {
            user: None,
            until_ms: i64::MAX,
        };
        assert_eq!(
            plan(&g, "a", &all, &m, 3, 0).unwrap().group.muted_all,
            Some(true)
        );
        assert_eq!(code(plan(&g, "m", &Op::Dismiss, &m, 3, 0)), "forbidden");
        assert_eq!(code(plan(&g, "a", &Op::Dismiss, &m, 3, 0)), "forbidden");
        assert!(
            plan(&g, "o", &Op::Dismiss, &m, 3, 0)
                .unwrap()
                .group
                .dismissed
        );
    }

    #[test]
    fn names_and_announcements_are_checked() {
        assert_eq!(name(" 家人群 ").unwrap(), "家人群");
        assert!(name("").is_err());
        assert!(name(&"群".repeat(65)).is_err());
        assert!(announcement("第一行\n第二行").is_ok());
        assert!(announcement("a\u{0}").is_err());
    }
}
