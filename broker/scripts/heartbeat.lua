-- Extend a lease and record progress. ARGV: prefix, now, task id, lease id,
-- progress fraction ('' to leave), progress message.
local id, lease_id = ARGV[3], ARGV[4]
local tk = task_key(id)
local t = redis.call('HMGET', tk, 'status', 'lease_id', 'queue', 'lease_seconds', 'worker_id',
                      'progress_fraction', 'progress_message')
if not t[1] then return {'not_found'} end
if t[2] ~= lease_id then return {'lease_lost', t[1]} end
if t[1] == 'canceled' then return {'canceled', t[1]} end
if t[1] ~= 'running' then return {'lease_lost', t[1]} end
local deadline = fmt_time(now + tonumber(t[4]))
redis.call('HSET', tk, 'lease_deadline', deadline)
redis.call('ZADD', running_key(t[3]), deadline, id)
touch_worker(t[5], tonumber(deadline))
if ARGV[5] ~= '' then
  redis.call('HSET', tk, 'progress_fraction', ARGV[5], 'progress_message', ARGV[6])
  if ARGV[5] ~= t[6] or ARGV[6] ~= t[7] then
    webhook_event(tk, id, 'progress', 'progress', {fraction = tonumber(ARGV[5]), message = ARGV[6]})
  end
end
return {'ok', deadline}
