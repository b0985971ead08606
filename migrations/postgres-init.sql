-- compose.yaml: one PostgreSQL database per service (no service reads
-- another's tables). Each service runs its own migrations at start.
CREATE DATABASE natter_messages OWNER natter;
CREATE DATABASE natter_social OWNER natter;
CREATE DATABASE natter_groups OWNER natter;
CREATE DATABASE natter_files OWNER natter;
