-- Atomic check-and-charge of every limit of one subject (see gcra.ts for the algorithm), and
-- the risk model's view of the subject's recent behaviour (sidecar/risk/subjectFeatures.ts),
-- observed in the same call: a check with quota and risk is one round trip.
-- KEYS[1..n]: the state of limit i; then, when observing, the subject's risk state: rate
-- (hash), ipa and ipb (HyperLogLogs of source addresses, one per clock hour, alternating),
-- agents and routes (sets of hashes). All share the subject's hash tag: one slot, one call.
-- ARGV: cost, dry ("1": evaluate only), n (limits), then per limit: kind ("g" GCRA |
--       "c" calendar), requests, and windowMs (g) or resetAt in ms since the epoch (c); then,
--       when observing: source address, user-agent hash, route hash.
-- Time is the Redis server's, so sidecars with skewed clocks still share one timeline.
-- Returns {allowed, then per limit: allowed, remaining, resetMs, retryAfterMs, then the
-- number of replicas in sync (only counted when something was charged; -1 otherwise)}: the
-- client's WAIT must reach that many (up to its setting) before the check is admitted; then,
-- when observing: requests in the last minute and hour (this one included), distinct source
-- addresses this hour and the last, 1/0 for a user agent and a route new to the subject, and
-- the subject's refused checks in the last 15 minutes (added by failures.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local dry = ARGV[2] == '1'
local n = tonumber(ARGV[3])
local out = {1}
local writes = {}
for i = 1, n do
  local a = 3 + (i - 1) * 3
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
if out[1] == 1 and not dry and n > 0 then
  for i = 1, n do
    redis.call('SET', KEYS[i], writes[i][1], 'PX', writes[i][2])
  end
  replicas = 0
  for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do replicas = replicas + 1 end
end
table.insert(out, replicas)

if #KEYS == n then return out end
-- The subject's behaviour, observed whatever the quota decided (a denied request is behaviour
-- too). Windows: a sliding estimate over the current and the previous minute (hour):
-- previous * (share of the previous window still inside the last 60 s) + current.
local rate, ipa, ipb, agents, routes = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], KEYS[n + 4], KEYS[n + 5]
local o = 3 + n * 3
local ip, agent, route = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
local minute, hour = math.floor(now / 60000), math.floor(now / 3600000)
local st = redis.call('HMGET', rate, 'm', 'mc', 'mp', 'h', 'hc', 'hp', 'ha', 'hb', 'q', 'qc', 'qp')
local function roll(at, cur, prev, idx)
  at, cur, prev = tonumber(at), tonumber(cur) or 0, tonumber(prev) or 0
  if at == idx then return cur, prev end
  if at == idx - 1 then return 0, cur end
  return 0, 0
end
local mc, mp = roll(st[1], st[2], st[3], minute)
local hc, hp = roll(st[4], st[5], st[6], hour)
mc, hc = mc + 1, hc + 1
redis.call('HSET', rate, 'm', minute, 'mc', mc, 'mp', mp, 'h', hour, 'hc', hc, 'hp', hp)
local perMinute = math.floor(mp * (1 - (now % 60000) / 60000) + mc)
local perHour = math.floor(hp * (1 - (now % 3600000) / 3600000) + hc)
-- Source addresses: the HyperLogLog of this hour (ipa for even hours, ipb for odd), emptied
-- when it held an older hour; counted together with the other one when that is the last hour.
local curKey, otherKey, curAt, otherAt, curField = ipa, ipb, st[7], st[8], 'ha'
if hour % 2 == 1 then curKey, otherKey, curAt, otherAt, curField = ipb, ipa, st[8], st[7], 'hb' end
if tonumber(curAt) ~= hour then
  redis.call('DEL', curKey)
  redis.call('HSET', rate, curField, hour)
end
if ip ~= '' then redis.call('PFADD', curKey, ip) end
redis.call('PEXPIRE', curKey, 7200000)
local ips
if tonumber(otherAt) == hour - 1 then ips = redis.call('PFCOUNT', curKey, otherKey)
else ips = redis.call('PFCOUNT', curKey) end
redis.call('PEXPIRE', rate, 7200000)
-- Agents and routes: remembered until the subject is idle for 30 days, up to a bound (past
-- it, what is new stays new: it is not remembered). The rate and addresses: two hours.
local function novel(set, member, bound)
  if member == '' then return 0 end
  local seen = redis.call('SISMEMBER', set, member) == 1
  if not seen and redis.call('SCARD', set) < bound then redis.call('SADD', set, member) end
  redis.call('PEXPIRE', set, 2592000000)
  if seen then return 0 end
  return 1
end
table.insert(out, perMinute)
table.insert(out, perHour)
table.insert(out, ips)
table.insert(out, novel(agents, agent, 64))
table.insert(out, novel(routes, route, 1000))
local quarter = math.floor(now / 900000)
local qc, qp = roll(st[9], st[10], st[11], quarter)
table.insert(out, math.floor(qp * (1 - (now % 900000) / 900000) + qc))
return out
