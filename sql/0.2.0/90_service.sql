-- pg_jobqueue 0.2.0, last: the worker serves this database from now on (the launcher is
-- asked at commit).
SELECT job._request_service();
