-- Read fan-out for large groups.
-- conversations.read_fanout = 1: the group is large; its messages are not
-- appended to each member's inbox but published once on im.group.v1.<group>.
ALTER TABLE conversations ADD COLUMN read_fanout BIGINT NOT NULL DEFAULT 0;
-- How this message is delivered: 0 through the inboxes, 1 by read fan-out
-- (fixed when it is stored, so a late fan-out - the sweep, a retry - uses it).
ALTER TABLE messages ADD COLUMN delivery BIGINT NOT NULL DEFAULT 0;
-- 1: after this message its group is large (read fan-out).
ALTER TABLE messages ADD COLUMN group_large BIGINT NOT NULL DEFAULT 0;
