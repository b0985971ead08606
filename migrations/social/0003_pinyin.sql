-- Nicknames' pinyin, whole and by initials ("王小明": "wangxiaoming", "wxm"),
-- lowercased without tones or spaces, for people search. Rows from before
-- this migration get them when the social service starts (NULL until then).
ALTER TABLE profiles ADD COLUMN nickname_pinyin TEXT;
ALTER TABLE profiles ADD COLUMN nickname_initials TEXT;
