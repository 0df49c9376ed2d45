-- Cancel a task that has not finished. ARGV: prefix, now, task id.
local id = ARGV[3]
local tk = task_key(id)
local t = redis.call('HMGET', tk, 'status', 'queue')
if not t[1] then return {'not_found'} end
if t[1] == 'queued' then
  redis.call('ZREM', queue_key(t[2]), id)
elseif t[1] == 'running' then
  redis.call('ZREM', running_key(t[2]), id)  -- lease_id stays: the next heartbeat learns of it
else
  return {'finished', t[1]}
end
finish(tk, id, 'canceled', nil)
return {'ok', 'canceled'}
