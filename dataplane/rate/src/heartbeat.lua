-- Registers a pod as live until now + ttl and counts the live pods.
-- KEYS[1]: sorted set of pods (score: expiry, µs of server time)
-- ARGV[1]: pod id; ARGV[2]: ttl (µs)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
