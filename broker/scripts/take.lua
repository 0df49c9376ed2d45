-- Reap expired leases, then lease up to max_tasks queued tasks from the queues, in order.
-- ARGV: prefix, now, lease seconds, max_tasks, worker id, reap limit, n queue names, the queues,
--       then max_tasks fresh lease ids.
local lease, max_tasks, worker, reap_limit = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local nq = tonumber(ARGV[7])
hold_events()  -- the reaped tasks' events, as one message
reap(reap_limit)
publish_held()
local taken = {}
for qi = 1, nq do
  local q = ARGV[7 + qi]
  while #taken < max_tasks do
    local popped = redis.call('ZPOPMIN', queue_key(q), 1)
    if #popped == 0 then break end
    local id = popped[1]
    local tk = task_key(id)
    if settle(id) == 'queued' then
      local lease_id = ARGV[7 + nq + #taken + 1]
      local deadline = fmt_time(now + lease)
      local attempt = redis.call('HINCRBY', tk, 'attempts', 1)
      redis.call('HSET', tk, 'status', 'running', 'lease_id', lease_id, 'lease_deadline', deadline,
                 'lease_seconds', lease, 'started_at', fmt_time(now), 'worker_id', worker,
                 'progress_fraction', '', 'progress_message', '')
      redis.call('ZADD', running_key(q), deadline, id)
      local t = redis.call('HMGET', tk, 'content_type', 'size', 'queued_at', 'created_at')
      observe(q, 'queue_wait', now - tonumber(t[3] or t[4]))
      table.insert(taken, {id, lease_id, deadline, tostring(attempt), q, t[1], t[2]})
    end
  end
end
local names = {}
for qi = 1, nq do names[qi] = ARGV[7 + qi] end
touch_worker(worker, now + (#taken > 0 and math.max(lease, WORKER_IDLE_GRACE) or WORKER_IDLE_GRACE),
             'queues', table.concat(names, ','))
return taken
