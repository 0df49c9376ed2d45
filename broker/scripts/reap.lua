-- Reap expired leases in every queue. ARGV: prefix, now, limit.
return reap(tonumber(ARGV[3]))
