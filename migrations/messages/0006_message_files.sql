-- The files a message references (its file, its thumbnail): a member who
-- may read the message may read them (the files service asks). Written in
-- the transaction that stores the message; a recall deletes its rows.
CREATE TABLE message_files (
    file_id    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (file_id, message_id)
);

CREATE INDEX message_files_by_message ON message_files (message_id);
