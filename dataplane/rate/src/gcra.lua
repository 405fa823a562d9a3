-- GCRA over several keys at once, for a batch of requests, all or nothing
-- per request. The same arithmetic as gcra.rs, on the server's clock (TIME),
-- so pods with skewed clocks share one timeline.
--
-- KEYS: limiter hashes, fields r = rate per second, b = burst, t = TAT in
--       microseconds. No field r: unlimited. All share one hash tag.
-- ARGV[1]: retry-after (µs) answered for keys of rate 0
-- ARGV[2]: number of requests; then for each request:
--          cost, max wait (µs), n, and n indexes into KEYS (1-based)
-- Returns three integers per request: {0, wait µs, 0} when allowed (tokens
-- booked at now + wait), {1, retry-after µs, j} when refused by the
-- request's j-th key.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local zero_retry = tonumber(ARGV[1])
local nreq = tonumber(ARGV[2])
local state = {}
local function load(i)
  local s = state[i]
  if s == nil then
    local v = redis.call('HMGET', KEYS[i], 'r', 'b', 't')
    s = { r = tonumber(v[1]), b = tonumber(v[2]) or 0, t = tonumber(v[3]) or 0, dirty = false }
    state[i] = s
  end
  return s
end
local out = {}
local p = 3
for q = 1, nreq do
  local cost = tonumber(ARGV[p])
  local maxw = tonumber(ARGV[p + 1])
  local nk = tonumber(ARGV[p + 2])
  p = p + 3
  local allow_at = now
  local limiting = 0
  local never = 0
  for j = 1, nk do
    local s = load(tonumber(ARGV[p + j - 1]))
    if s.r ~= nil then
      if s.r <= 0 then
        if never == 0 then never = j end
      else
        local T = 1000000 / s.r
        local inc = cost * T
        local tau = math.max(math.max(s.b, 1) * T, inc)
        local at = math.max(s.t, now) + (inc - tau)
        if at > allow_at then
          allow_at = at
          limiting = j
        end
      end
    end
  end
  local n = #out
  if never > 0 then
    out[n + 1] = 1; out[n + 2] = zero_retry; out[n + 3] = never
  elseif allow_at - now <= maxw then
    for j = 1, nk do
      local s = state[tonumber(ARGV[p + j - 1])]
      if s.r ~= nil and s.r > 0 then
        s.t = math.max(s.t, allow_at) + cost * 1000000 / s.r
        s.dirty = true
      end
    end
    out[n + 1] = 0; out[n + 2] = math.ceil(allow_at - now); out[n + 3] = 0
  else
    out[n + 1] = 1; out[n + 2] = math.ceil(allow_at - now); out[n + 3] = limiting
  end
  p = p + nk
end
for i, s in pairs(state) do
  if s.dirty then
    redis.call('HSET', KEYS[i], 't', string.format('%.0f', s.t))
  end
end
return out
