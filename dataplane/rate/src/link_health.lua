-- Shares link health between pods: each pod reports, for every link, whether
-- it holds a bound session; a link is up while at least one pod's report
-- saying so has not expired.
-- KEYS: one sorted set per link (members: pod ids; score: expiry, µs of
--       server time). All share one hash tag.
-- ARGV[1]: pod id; ARGV[2]: ttl (µs); ARGV[2 + i]: 1 if this pod holds a
--          bound session of KEYS[i], else 0.
-- Returns, per key, 1 if the link is up somewhere, else 0.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local pod = ARGV[1]
local ttl = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  if ARGV[2 + i] == '1' then
    redis.call('ZADD', KEYS[i], now + ttl, pod)
    redis.call('PEXPIRE', KEYS[i], math.ceil(ttl / 1000))
  else
    redis.call('ZREM', KEYS[i], pod)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  out[i] = (redis.call('ZCARD', KEYS[i]) > 0) and 1 or 0
end
return out
