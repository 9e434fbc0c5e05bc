-- Atomic check-and-charge of every limit of one subject (see gcra.ts for the algorithm).
-- KEYS[i]: the state of limit i; all share the subject's hash tag, so one slot, one call.
-- ARGV: cost, dry ("1": evaluate only), then per limit: kind ("g" GCRA | "c" calendar),
--       requests, and windowMs (g) or resetAt in ms since the epoch (c).
-- Time is the Redis server's, so sidecars with skewed clocks still share one timeline.
-- Returns {allowed, then per limit: allowed, remaining, resetMs, retryAfterMs, then the
-- number of replicas in sync (only counted when something was charged; -1 otherwise)}: the
-- client's WAIT must reach that many (up to its setting) before the check is admitted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local dry = ARGV[2] == '1'
local out = {1}
local writes = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 3
  local kind, requests, param = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local cur = redis.call('GET', KEYS[i])
  if kind == 'g' then
    local interval = param / requests
    local tat = now
    if cur then tat = math.max(tonumber(cur), now) end
    local newtat = tat + cost * interval
    local allowAt = newtat - param
    if allowAt > now then
      out[1] = 0
      table.insert(out, 0)
      table.insert(out, math.max(0, math.floor((param - (tat - now)) / interval)))
      table.insert(out, math.ceil(tat - now))
      table.insert(out, math.ceil(allowAt - now))
    else
      table.insert(out, 1)
      table.insert(out, math.max(0, math.floor((param - (newtat - now)) / interval)))
      table.insert(out, math.ceil(newtat - now))
      table.insert(out, 0)
      writes[i] = {string.format('%.3f', newtat), math.max(1, math.ceil(newtat - now))}
    end
  else
    local used = 0
    if cur then used = tonumber(cur) end
    local reset = math.max(1, param - now)
    if used + cost > requests then
      out[1] = 0
      table.insert(out, 0)
      table.insert(out, math.max(0, requests - used))
      table.insert(out, reset)
      table.insert(out, reset)
    else
      table.insert(out, 1)
      table.insert(out, requests - used - cost)
      table.insert(out, reset)
      table.insert(out, 0)
      writes[i] = {tostring(used + cost), reset}
    end
  end
end
local replicas = -1
if out[1] == 1 and not dry then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], writes[i][1], 'PX', writes[i][2])
  end
  replicas = 0
  for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do replicas = replicas + 1 end
end
table.insert(out, replicas)
return out
