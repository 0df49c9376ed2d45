-- Create a queued task, or return the task an idempotency key already names.
-- ARGV: prefix, now, task_id, queue, priority, idempotency key ('' for none), idempotency ttl,
--       then field/value pairs of the task hash.
local id, queue, priority, idem, idem_ttl = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
if idem ~= '' then
  local existing = redis.call('GET', idem)
  if existing then return {'replayed', existing} end
end
local seq = redis.call('INCR', prefix .. ':seq')
local score = string.format('%.0f', (9 - priority) * 1e12 + seq)
local tk = task_key(id)
redis.call('HSET', tk, 'score', score, 'status', 'queued', 'attempts', '0', 'lease_id', '',
           'lease_deadline', '', 'created_at', fmt_time(now), unpack(ARGV, 8))
redis.call('ZADD', queue_key(queue), score, id)
redis.call('SADD', prefix .. ':queues', queue)
count(queue, 'submitted')
if idem ~= '' then redis.call('SET', idem, id, 'EX', idem_ttl) end
redis.call('PUBLISH', events, 'queued:' .. queue)
return {'created', id}
