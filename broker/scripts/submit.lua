-- Create queued tasks, or return the tasks their idempotency keys already name.
-- ARGV: prefix, now, idempotency ttl, max queue depth (0: none), then per task: n (how many
--       strings of hash fields follow its head), task id, queue, priority, idempotency key ('' for
--       none), then n strings: field/value pairs of the task hash.
-- Returns one reply per task, in order: {'created', id, task hash as a flat list},
-- {'replayed', id} or {'full', depth}. Their queued events go out together (hold_events).
local idem_ttl, max_depth = ARGV[3], tonumber(ARGV[4])

local function submit(id, queue, priority, idem, first, last)
  if idem ~= '' then
    local existing = redis.call('GET', idem)
    if existing then return {'replayed', existing} end
  end
  local tk = task_key(id)
  if redis.call('EXISTS', tk) == 1 then
    -- an index rebuild restored this task from its payload blob while the submit was in flight
    if idem ~= '' then redis.call('SET', idem, id, 'EX', idem_ttl) end
    return {'created', id, redis.call('HGETALL', tk)}
  end
  local depth = redis.call('ZCARD', queue_key(queue))
  if max_depth > 0 and depth >= max_depth then return {'full', tostring(depth)} end
  local seq = redis.call('INCR', prefix .. ':seq')
  local score = string.format('%.0f', (9 - priority) * 1e12 + seq)
  redis.call('HSET', tk, 'score', score, 'status', 'queued', 'attempts', '0', 'lease_id', '',
             'lease_deadline', '', 'created_at', fmt_time(now), unpack(ARGV, first, last))
  redis.call('ZADD', queue_key(queue), score, id)
  redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
  redis.call('SADD', prefix .. ':queues', queue)
  count(queue, 'submitted')
  if idem ~= '' then redis.call('SET', idem, id, 'EX', idem_ttl) end
  publish('queued:' .. queue)
  return {'created', id, redis.call('HGETALL', tk)}
end

hold_events()
local replies = {}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  replies[#replies + 1] = submit(ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4],
                                 i + 5, i + 4 + n)
  i = i + 5 + n
end
publish_held()
return replies
