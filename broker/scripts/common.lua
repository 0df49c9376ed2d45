-- Shared by every script (prepended to each one). ARGV[1] is the key prefix, ARGV[2] "now".
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local events = prefix .. ':events'

local function task_key(id) return prefix .. ':task:' .. id end
local function queue_key(q) return prefix .. ':queue:' .. q end
local function running_key(q) return prefix .. ':running:' .. q end
local function fmt_time(t) return string.format('%.3f', t) end

-- Pub/sub events ("queued:<queue>", "done:<task_id>\n<notice>", "webhook"). A message holds one
-- event, or several joined by EVENT_SEPARATOR (broker/notify.py reads both). A script that
-- handles a batch calls hold_events() first and publish_held() last: its events go out
-- together, EVENTS_PER_MESSAGE to a message, so each broker process's listener reads one
-- message a batch rather than one a task.
local held = nil
local function publish_held()
  if held and #held > 0 then redis.call('PUBLISH', events, table.concat(held, EVENT_SEPARATOR)) end
  held = nil
end
local function hold_events() held = {} end
local function publish(event)
  if not held then
    redis.call('PUBLISH', events, event)
    return
  end
  held[#held + 1] = event
  if #held >= EVENTS_PER_MESSAGE then
    publish_held()
    held = {}
  end
end

-- Activity for the dashboard and /metrics, written with the transitions it counts. The constants
-- (HISTOGRAM_BUCKETS, WORKERS_MAX, ...) come from broker/keys.py, prepended to every script.
local function count(queue, what)
  redis.call('HINCRBY', prefix .. ':stats:' .. queue, what, 1)
end

local function observe(queue, name, seconds)
  seconds = math.max(0, seconds or 0)
  local bucket = #HISTOGRAM_BUCKETS + 1
  for i, bound in ipairs(HISTOGRAM_BUCKETS) do
    if seconds <= bound then bucket = i break end
  end
  local hk = prefix .. ':hist:' .. queue .. ':' .. name
  redis.call('HINCRBY', hk, tostring(bucket), 1)
  redis.call('HINCRBY', hk, 'count', 1)
  redis.call('HINCRBYFLOAT', hk, 'sum', string.format('%.6f', seconds))
end

local function count_finished(queue)
  local key = prefix .. ':finished:' .. queue .. ':' .. string.format('%d', math.floor(now / 60))
  redis.call('INCR', key)
  redis.call('EXPIRE', key, THROUGHPUT_KEEP)
end

-- A worker called: it counts as alive until `alive_until` (never earlier than it already did).
-- `...` are extra field/value pairs for its hash.
local function touch_worker(worker, alive_until, ...)
  if not worker or worker == '' then return end
  local workers = prefix .. ':workers'
  local until_ = math.max(alive_until, tonumber(redis.call('ZSCORE', workers, worker) or 0) or 0)
  redis.call('ZADD', workers, fmt_time(until_), worker)
  local wk = prefix .. ':worker:' .. worker
  redis.call('HSET', wk, 'last_seen', fmt_time(now), ...)
  redis.call('EXPIRE', wk, math.ceil(until_ - now) + WORKER_FORGET)
  redis.call('ZREMRANGEBYSCORE', workers, '-inf', '(' .. fmt_time(now - WORKER_FORGET))
  redis.call('ZREMRANGEBYRANK', workers, 0, -(WORKERS_MAX + 1))
end

local function count_for_worker(worker, what)
  local wk = prefix .. ':worker:' .. (worker or '')
  if worker and worker ~= '' and redis.call('EXISTS', wk) == 1 then
    redis.call('HINCRBY', wk, what, 1)
  end
end

local function record_failure(id, queue, worker, attempt, error_text, final)
  local entry = cjson.encode({task_id = id, queue = queue, worker_id = worker or '',
                              attempt = tonumber(attempt) or 0, final = final, at = now,
                              error = string.sub(error_text or '', 1, MAX_FAILURE_TEXT)})
  redis.call('LPUSH', prefix .. ':failures', entry)
  redis.call('LTRIM', prefix .. ':failures', 0, RECENT_FAILURES - 1)
end

-- Queue a webhook event for the relay when the task asked for this kind (`wanted`: completed,
-- failed or progress); `kind` names it in the delivered body (task.<kind>).
local function webhook_event(tk, id, wanted, kind, progress)
  local subscribed = redis.call('HGET', tk, 'webhook_events')
  if not subscribed or not string.find(',' .. subscribed .. ',', ',' .. wanted .. ',', 1, true) then
    return
  end
  local seq = redis.call('INCR', prefix .. ':webhook:seq')
  local item = {id = 'msg_' .. id .. '_' .. seq, task_id = id, event = kind, at = now}
  if progress then item.progress = progress end
  local outbox = prefix .. ':webhook:outbox'
  redis.call('LPUSH', outbox, cjson.encode(item))
  redis.call('LTRIM', outbox, 0, WEBHOOK_OUTBOX_MAX - 1)
  publish('webhook')
end

local EVENT_OF = {succeeded = 'completed', failed = 'failed', canceled = 'canceled', expired = 'expired'}

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
  local t = redis.call('HMGET', tk, 'queue', 'created_at')
  count(t[1], status)
  if status == 'succeeded' then observe(t[1], 'end_to_end', now - tonumber(t[2])) end
  if status == 'succeeded' or status == 'failed' then count_finished(t[1]) end
  webhook_event(tk, id, status == 'succeeded' and 'completed' or 'failed', EVENT_OF[status], nil)
  -- The notice carries the final hash, so a waiting client answers without reading it again.
  publish('done:' .. id .. '\n' .. cjson.encode(redis.call('HGETALL', tk)))
end

local function requeue(tk, id, queue, error_text)
  local score = redis.call('HGET', tk, 'score')
  redis.call('HSET', tk, 'status', 'queued', 'lease_id', '', 'lease_deadline', '', 'error', error_text,
             'queued_at', fmt_time(now))
  redis.call('ZADD', queue_key(queue), score, id)
  redis.call('ZADD', prefix .. ':ttl', redis.call('HGET', tk, 'expires_at'), id)
  publish('queued:' .. queue)
  count(queue, 'redelivered')
end

-- An attempt ended without a result: back to the queue while attempts remain, else failed.
local function end_attempt(tk, id, error_text, retryable)
  local t = redis.call('HMGET', tk, 'queue', 'attempts', 'max_attempts', 'worker_id')
  redis.call('ZREM', running_key(t[1]), id)
  local again = retryable and tonumber(t[2]) < tonumber(t[3])
  record_failure(id, t[1], t[4], t[2], error_text, not again)
  count_for_worker(t[4], 'tasks_failed')
  if again then
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
