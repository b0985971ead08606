-- 1: the group is large: its messages are not appended to each member's
-- inbox but published once on im.group.v1.<group> (read fan-out).
ALTER TABLE conversations ADD COLUMN read_fanout BIGINT NOT NULL DEFAULT 0;
