//! The vocabulary of groups that several services share: member roles and
//! the kinds of system notice a group change leaves in its conversation.
//! Both travel as strings on the wire (`Member.role`, `SystemNotice.kind`)
//! and are parsed here, once.

use crate::subject::event;

/// A member's role; the order is the order of power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// Owners and admins manage the group: they may invite, remove, recall
    /// any message and speak while the group is muted.
    pub fn manages(self) -> bool {
        self >= Role::Admin
    }
}

/// The kind of a group's system notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    Created,
    MemberAdded,
    MemberRemoved,
    MemberLeft,
    RoleChanged,
    OwnerChanged,
    Renamed,
    Announcement,
    Updated,
    MutedAll,
    UnmutedAll,
    Muted,
    Unmuted,
    Dismissed,
}

impl NoticeKind {
    const ALL: [NoticeKind; 14] = [
        NoticeKind::Created,
        NoticeKind::MemberAdded,
        NoticeKind::MemberRemoved,
        NoticeKind::MemberLeft,
        NoticeKind::RoleChanged,
        NoticeKind::OwnerChanged,
        NoticeKind::Renamed,
        NoticeKind::Announcement,
        NoticeKind::Updated,
        NoticeKind::MutedAll,
        NoticeKind::UnmutedAll,
        NoticeKind::Muted,
        NoticeKind::Unmuted,
        NoticeKind::Dismissed,
    ];

    /// Its name on the wire (`SystemNotice.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Created => "created",
            NoticeKind::MemberAdded => "member_added",
            NoticeKind::MemberRemoved => "member_removed",
            NoticeKind::MemberLeft => "member_left",
            NoticeKind::RoleChanged => "role_changed",
            NoticeKind::OwnerChanged => "owner_changed",
            NoticeKind::Renamed => "renamed",
            NoticeKind::Announcement => "announcement",
            NoticeKind::Updated => "updated",
            NoticeKind::MutedAll => "muted_all",
            NoticeKind::UnmutedAll => "unmuted_all",
            NoticeKind::Muted => "muted",
            NoticeKind::Unmuted => "unmuted",
            NoticeKind::Dismissed => "dismissed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The public event of the change (`GroupEvent.kind`, and its subject):
    /// renames, announcements and other updates are all `updated`, every
    /// kind of mute is `muted`.
    pub fn event(self) -> (&'static str, &'static str) {
        match self {
            NoticeKind::Created => ("created", event::GROUP_CREATED),
            NoticeKind::MemberAdded => ("member_added", event::GROUP_MEMBER_ADDED),
            NoticeKind::MemberRemoved => ("member_removed", event::GROUP_MEMBER_REMOVED),
            NoticeKind::MemberLeft => ("member_left", event::GROUP_MEMBER_LEFT),
            NoticeKind::RoleChanged => ("role_changed", event::GROUP_ROLE_CHANGED),
            NoticeKind::OwnerChanged => ("owner_changed", event::GROUP_OWNER_CHANGED),
            NoticeKind::Renamed | NoticeKind::Announcement | NoticeKind::Updated => {
                ("updated", event::GROUP_UPDATED)
            }
            NoticeKind::MutedAll
            | NoticeKind::UnmutedAll
            | NoticeKind::Muted
            | NoticeKind::Unmuted => ("muted", event::GROUP_MUTED),
            NoticeKind::Dismissed => ("dismissed", event::GROUP_DISMISSED),
        }
    }

    /// A member leaves the group with this notice (their edges stop
    /// following the group once it is delivered).
    pub fn ends_membership(self) -> bool {
        matches!(self, NoticeKind::MemberRemoved | NoticeKind::MemberLeft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_roles_round_trip_through_their_names() {
        for kind in NoticeKind::ALL {
            assert_eq!(NoticeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(NoticeKind::parse("nope"), None);
        for role in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(Role::Owner.manages() && Role::Admin.manages() && !Role::Member.manages());
        assert_eq!(NoticeKind::Renamed.event().0, "updated");
    }
}
