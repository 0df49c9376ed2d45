-- Give a running task back to its queue without counting the attempt: the worker stopped before
-- it could start or finish it. ARGV: prefix, now, task id, lease id.
local id, lease_id = ARGV[3], ARGV[4]
local tk = task_key(id)
local t = redis.call('HMGET', tk, 'status', 'lease_id', 'queue', 'score', 'attempts')
if not t[1] then return {'not_found'} end
if t[2] ~= lease_id then return {'lease_lost', t[1]} end
if t[1] ~= 'running' then return {'finished', t[1]} end
redis.call('ZREM', running_key(t[3]), id)
local attempts = math.max(0, tonumber(t[5]) - 1)
redis.call('HSET', tk, 'status', 'queued', 'attempts', tostring(attempts), 'lease_id', '',
           'lease_deadline', '', 'progress_fraction', '', 'progress_message', '',
           'queued_at', fmt_time(now))
redis.call('ZADD', queue_key(t[3]), t[4], id)
redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
publish('queued:' .. t[3])
return {'ok', 'queued'}
