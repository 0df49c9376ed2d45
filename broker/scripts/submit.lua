-- Create a queued task, or return the task an idempotency key already names.
-- ARGV: prefix, now, task_id, queue, priority, idempotency key ('' for none), idempotency ttl,
--       max queue depth (0: none), then field/value pairs of the task hash.
-- Returns {'created', id, task hash as a flat list}, {'replayed', id} or {'full', depth}.
local id, queue, priority, idem, idem_ttl = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local max_depth = tonumber(ARGV[8])
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
           'lease_deadline', '', 'created_at', fmt_time(now), unpack(ARGV, 9))
redis.call('ZADD', queue_key(queue), score, id)
redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
redis.call('SADD', prefix .. ':queues', queue)
count(queue, 'submitted')
if idem ~= '' then redis.call('SET', idem, id, 'EX', idem_ttl) end
redis.call('PUBLISH', events, 'queued:' .. queue)
return {'created', id, redis.call('HGETALL', tk)}
