-- Record results for the attempts holding their leases. ARGV: prefix, now, then per result:
-- task id, lease id, result key, result content type, result size, model version.
-- Returns one reply per result, in order: {'ok', 'succeeded', the task hash as a flat list},
-- {'duplicate', status} or an error ({'not_found'}, {'lease_lost', status}, {'finished', status}).
-- The results' done events go out together (hold_events).
local function complete(id, lease_id, result_key, content_type, size, model_version)
  local tk = task_key(id)
  local t = redis.call('HMGET', tk, 'status', 'lease_id', 'queue', 'started_at', 'worker_id')
  if not t[1] then return {'not_found'} end
  if t[2] ~= lease_id then return {'lease_lost', t[1]} end
  if t[1] == 'succeeded' then return {'duplicate', t[1]} end
  if t[1] ~= 'running' then return {'finished', t[1]} end
  redis.call('ZREM', running_key(t[3]), id)
  redis.call('HSET', tk, 'result_key', result_key, 'result_content_type', content_type,
             'result_size', size, 'model_version', model_version, 'error', '')
  observe(t[3], 'processing', now - tonumber(t[4]))
  touch_worker(t[5], now + WORKER_IDLE_GRACE, 'model_version', model_version)
  count_for_worker(t[5], 'tasks_done')
  finish(tk, id, 'succeeded', nil)
  return {'ok', 'succeeded', redis.call('HGETALL', tk)}
end

hold_events()
local replies = {}
for i = 3, #ARGV, 6 do
  replies[#replies + 1] = complete(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                                   ARGV[i + 5])
end
publish_held()
return replies
