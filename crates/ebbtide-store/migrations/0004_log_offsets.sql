-- Each log chunk's byte offset in its job's log, so a log is read a page at
-- a time (never loaded whole), and the attempt that wrote it, so the logs of
-- a retried job are told apart.
ALTER TABLE job_logs ADD COLUMN start INTEGER;
ALTER TABLE job_logs ADD COLUMN attempt INTEGER;
UPDATE job_logs SET start = (
    SELECT COALESCE(SUM(length(j2.chunk)), 0) FROM job_logs j2
    WHERE j2.job = job_logs.job AND j2.seq < job_logs.seq
);
