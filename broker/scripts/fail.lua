-- Fail the attempt holding the lease. ARGV: prefix, now, task id, lease id, error text,
-- retryable ('1' or '0').
local id, lease_id = ARGV[3], ARGV[4]
local tk = task_key(id)
local t = redis.call('HMGET', tk, 'status', 'lease_id', 'queue', 'started_at', 'worker_id')
if not t[1] then return {'not_found'} end
if t[2] ~= lease_id then return {'lease_lost', t[1]} end
if t[1] == 'failed' then return {'duplicate', t[1]} end
if t[1] ~= 'running' then return {'finished', t[1]} end
observe(t[3], 'processing', now - tonumber(t[4]))
touch_worker(t[5], now + WORKER_IDLE_GRACE)
return {'ok', end_attempt(tk, id, ARGV[5], ARGV[6] == '1')}
