-- Admission control before a submit stores anything: the queue's depth, then the owner's submit
-- rate (a token bucket of `burst` tokens refilled at `rate` per second). A refused submit spends
-- no token. ARGV: prefix, now, owner, queue, max depth (0: none), rate (0: none), burst.
-- Returns {'ok'}, {'full', depth} or {'rate_limited', seconds until a token is free}.
local owner, queue = ARGV[3], ARGV[4]
local max_depth, rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if max_depth > 0 then
  local depth = redis.call('ZCARD', queue_key(queue))
  if depth >= max_depth then return {'full', tostring(depth)} end
end
if rate > 0 then
  local key = prefix .. ':rate:' .. owner
  local bucket = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(bucket[1]) or burst
  local updated = tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  if tokens < 1 then return {'rate_limited', string.format('%.3f', (1 - tokens) / rate)} end
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens - 1), 'updated', fmt_time(now))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
end
return {'ok'}
