-- Admission control before a submit stores anything: the queue's depth, then the owner's submit
-- rate (a token bucket of `burst` tokens refilled at `rate` per second). A refused submit spends
-- no token. ARGV: prefix, now, owner, queue, max depth (0: none), rate (0: none), burst, and
-- optionally the number of tasks admitted together (default 1): all of them must fit under the
-- depth, and all spend a token, the bucket going into debt (below zero) for a batch larger than
-- the tokens it needs on hand, min(count, burst), so later submits wait that debt out.
-- ARGV[9], optional: the submit's idempotency key (its full Redis key); a key that already
-- names a task answers {'replayed', id} before any check, spending nothing.
-- Returns {'ok'}, {'replayed', id}, {'full', depth} or {'rate_limited', seconds until the
-- tokens are free}.
local owner, queue = ARGV[3], ARGV[4]
local max_depth, rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = tonumber(ARGV[8] or '1')
local idem = ARGV[9] or ''
if idem ~= '' then
  local existing = redis.call('GET', idem)
  if existing then return {'replayed', existing} end
end
if max_depth > 0 then
  local depth = redis.call('ZCARD', queue_key(queue))
  if depth + n > max_depth then return {'full', tostring(depth)} end
end
if rate > 0 then
  local key = prefix .. ':rate:' .. owner
  local bucket = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens = tonumber(bucket[1]) or burst
  local updated = tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  local needed = math.min(n, burst)
  if tokens < needed then
    return {'rate_limited', string.format('%.3f', (needed - tokens) / rate)}
  end
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens - n), 'updated', fmt_time(now))
  redis.call('EXPIRE', key, math.ceil(math.max(burst, burst - tokens + n) / rate) + 1)
end
return {'ok'}
