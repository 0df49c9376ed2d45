-- Settle one task whose lease or ttl ran out; used by status reads. ARGV: prefix, now, task id.
return settle(ARGV[3])
