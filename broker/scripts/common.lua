-- Shared by every script (prepended to each one). ARGV[1] is the key prefix, ARGV[2] "now".
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local events = prefix .. ':events'

local function task_key(id) return prefix .. ':task:' .. id end
local function queue_key(q) return prefix .. ':queue:' .. q end
local function running_key(q) return prefix .. ':running:' .. q end
local function fmt_time(t) return string.format('%.3f', t) end

-- Every final state goes through here: it starts the retention clock and, for the states that
-- leave no blob of their own (failed, canceled), asks for a state record in storage.
local function finish(tk, id, status, error_text)
  redis.call('HSET', tk, 'status', status, 'finished_at', fmt_time(now))
  if error_text then redis.call('HSET', tk, 'error', error_text) end
  redis.call('ZADD', prefix .. ':finished', fmt_time(now), id)
  redis.call('ZREM', prefix .. ':ttl', id)
  if status == 'failed' or status == 'canceled' then
    redis.call('SADD', prefix .. ':unrecorded', id)
  end
  redis.call('PUBLISH', events, 'done:' .. id)
end

local function requeue(tk, id, queue, error_text)
  local score = redis.call('HGET', tk, 'score')
  redis.call('HSET', tk, 'status', 'queued', 'lease_id', '', 'lease_deadline', '', 'error', error_text)
  redis.call('ZADD', queue_key(queue), score, id)
  redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
  redis.call('PUBLISH', events, 'queued:' .. queue)
end

-- An attempt ended without a result: back to the queue while attempts remain, else failed.
local function end_attempt(tk, id, error_text, retryable)
  local t = redis.call('HMGET', tk, 'queue', 'attempts', 'max_attempts')
  redis.call('ZREM', running_key(t[1]), id)
  if retryable and tonumber(t[2]) < tonumber(t[3]) then
    requeue(tk, id, t[1], error_text)
    return 'queued'
  end
  finish(tk, id, 'failed', error_text)
  return 'failed'
end

-- Settle one task whose time ran out: a lease past its deadline, or a queued task past its ttl.
local function settle(id)
  local tk = task_key(id)
  local t = redis.call('HMGET', tk, 'status', 'queue', 'lease_deadline', 'expires_at', 'worker_id', 'attempts')
  local status = t[1]
  if status == 'running' and t[3] ~= '' and tonumber(t[3]) <= now then
    local why = 'lease expired: worker ' .. (t[5] or '?') .. ' stopped heartbeating (attempt ' .. t[6] .. ')'
    return end_attempt(tk, id, why, true)
  elseif status == 'queued' and t[4] and tonumber(t[4]) <= now then
    redis.call('ZREM', queue_key(t[2]), id)
    finish(tk, id, 'expired', 'not taken within its ttl')
    return 'expired'
  elseif status and status ~= 'running' and t[2] then
    redis.call('ZREM', running_key(t[2]), id)  -- a stale running entry: drop it
  end
  return status
end

-- Reap expired leases in every queue, at most `limit` of them.
local function reap(limit)
  local reaped = 0
  for _, q in ipairs(redis.call('SMEMBERS', prefix .. ':queues')) do
    local ids = redis.call('ZRANGEBYSCORE', running_key(q), '-inf', now, 'LIMIT', 0, limit - reaped)
    for _, id in ipairs(ids) do
      settle(id)
      reaped = reaped + 1
    end
    if reaped >= limit then break end
  end
  return reaped
end
