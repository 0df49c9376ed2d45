-- Per-queue depth, in-flight count and the creation time of the oldest queued task.
-- ARGV: prefix, now. Returns {name, depth, in_flight, oldest_created_at or ''} per queue.
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', prefix .. ':queues')) do
  local oldest = nil
  for band = 0, 9 do  -- one FIFO per priority band: its head is that band's oldest task
    local head = redis.call('ZRANGEBYSCORE', queue_key(q), band * 1e12, (band + 1) * 1e12 - 1, 'LIMIT', 0, 1)
    if #head > 0 then
      local created = tonumber(redis.call('HGET', task_key(head[1]), 'created_at'))
      if created and (oldest == nil or created < oldest) then oldest = created end
    end
  end
  table.insert(out, {q, redis.call('ZCARD', queue_key(q)), redis.call('ZCARD', running_key(q)),
                     oldest and fmt_time(oldest) or ''})
end
return out
