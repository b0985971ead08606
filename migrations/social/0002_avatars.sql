-- Which files are avatars (the files service asks before it deletes a
-- file nothing else uses).
CREATE INDEX profiles_by_avatar ON profiles (avatar);
