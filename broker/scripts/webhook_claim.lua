-- Claim webhook events for relaying, oldest first: events whose earlier claim lapsed (its relay
-- died), then new ones from the outbox. ARGV: prefix, now, limit, reclaim after (seconds).
-- Returns the events (JSON); the relay removes each from the relaying set once it is handed on.
local limit, reclaim = tonumber(ARGV[3]), tonumber(ARGV[4])
local relaying = prefix .. ':webhook:relaying'
local claimed = redis.call('ZRANGEBYSCORE', relaying, '-inf', now - reclaim, 'LIMIT', 0, limit)
for _, item in ipairs(claimed) do redis.call('ZADD', relaying, fmt_time(now), item) end
while #claimed < limit do
  local item = redis.call('RPOP', prefix .. ':webhook:outbox')
  if not item then break end
  redis.call('ZADD', relaying, fmt_time(now), item)
  table.insert(claimed, item)
end
return claimed
