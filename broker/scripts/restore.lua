-- Put a task found in blob storage back into the index, unless the index already has it.
-- ARGV: prefix, now, task id, queue, priority, status, then field/value pairs of the task hash
-- (the caller derives them from the blobs; a queued task needs expires_at, a final one
-- finished_at). Returns 'restored', 'exists', or 'purging' for a retired task whose blobs are
-- still being deleted.
local id, queue, priority, status = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local tk = task_key(id)
if redis.call('EXISTS', tk) == 1 then return 'exists' end
if redis.call('SISMEMBER', prefix .. ':purge', id) == 1 then return 'purging' end
local seq = redis.call('INCR', prefix .. ':seq')
local score = string.format('%.0f', (9 - priority) * 1e12 + seq)
redis.call('HSET', tk, 'score', score, 'status', status, 'lease_id', '', 'lease_deadline', '',
           unpack(ARGV, 7))
redis.call('SADD', prefix .. ':queues', queue)
if status == 'queued' then
  redis.call('ZADD', queue_key(queue), score, id)
  redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
  publish('queued:' .. queue)
else
  redis.call('ZADD', prefix .. ':finished', redis.call('HGET', tk, 'finished_at'), id)
end
return 'restored'
