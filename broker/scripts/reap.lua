-- Reap expired leases in every queue. ARGV: prefix, now, limit.
hold_events()
local reaped = reap(tonumber(ARGV[3]))
publish_held()
return reaped
