-- Record a result for the attempt holding the lease. ARGV: prefix, now, task id, lease id,
-- result key, result content type, result size, model version.
-- Returns {'ok', 'succeeded', the task hash as a flat list}, {'duplicate', status} or an error.
local id, lease_id = ARGV[3], ARGV[4]
local tk = task_key(id)
local t = redis.call('HMGET', tk, 'status', 'lease_id', 'queue', 'started_at', 'worker_id')
if not t[1] then return {'not_found'} end
if t[2] ~= lease_id then return {'lease_lost', t[1]} end
if t[1] == 'succeeded' then return {'duplicate', t[1]} end
if t[1] ~= 'running' then return {'finished', t[1]} end
redis.call('ZREM', running_key(t[3]), id)
redis.call('HSET', tk, 'result_key', ARGV[5], 'result_content_type', ARGV[6], 'result_size', ARGV[7],
           'model_version', ARGV[8], 'error', '')
observe(t[3], 'processing', now - tonumber(t[4]))
touch_worker(t[5], now + WORKER_IDLE_GRACE, 'model_version', ARGV[8])
count_for_worker(t[5], 'tasks_done')
finish(tk, id, 'succeeded', nil)
return {'ok', 'succeeded', redis.call('HGETALL', tk)}
