-- The janitor's state changes, at most `limit` of each kind:
-- 1. queued tasks whose ttl ran out become expired (even in a queue no worker takes);
-- 2. final tasks that finished more than `retention` seconds ago become expired tombstones that
--    Redis drops after `tombstone` seconds, and their ids go to the purge set so that their
--    blobs get deleted.
-- ARGV: prefix, now, retention, tombstone, limit. Returns {expired, retired}.
local retention, tombstone, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expired, retired = 0, 0
hold_events()  -- the expired tasks' events, as one message
for _, id in ipairs(redis.call('ZRANGEBYSCORE', prefix .. ':ttl', '-inf', now, 'LIMIT', 0, limit)) do
  if settle(id) == 'expired' then expired = expired + 1 end
  redis.call('ZREM', prefix .. ':ttl', id)  -- running or final: a later take settles it
end
publish_held()
local cutoff = fmt_time(now - retention)
local final = {succeeded = true, failed = true, canceled = true, expired = true}
local why = 'deleted after the retention period: the payload and result are gone'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', prefix .. ':finished', '-inf', cutoff, 'LIMIT', 0, limit)) do
  local tk = task_key(id)
  redis.call('ZREM', prefix .. ':finished', id)
  if final[redis.call('HGET', tk, 'status') or ''] then
    redis.call('HSET', tk, 'status', 'expired', 'retired_at', fmt_time(now), 'result_key', '',
               'result_content_type', '', 'result_size', '', 'error', why)
    redis.call('EXPIRE', tk, tombstone)
    redis.call('SREM', prefix .. ':unrecorded', id)
    redis.call('SADD', prefix .. ':purge', id)
    retired = retired + 1
  end
end
return {expired, retired}
