-- pg_jobqueue, last: the worker serves this database from now on (the launcher is asked at
-- commit).

SELECT job._request_service();
