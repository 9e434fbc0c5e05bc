-- Adds refused checks to subjects' risk state (sidecar/risk/subjectFeatures.ts): KEYS[1] the
-- subject's rate hash (the same one gcra.lua observes), ARGV[1] how many. Counted in clock
-- quarters of an hour (the current and the previous), as gcra.lua reads them back.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quarter = math.floor(now / 900000)
local st = redis.call('HMGET', KEYS[1], 'q', 'qc', 'qp')
local at, qc, qp = tonumber(st[1]), tonumber(st[2]) or 0, tonumber(st[3]) or 0
if at == quarter - 1 then qc, qp = 0, qc elseif at ~= quarter then qc, qp = 0, 0 end
redis.call('HSET', KEYS[1], 'q', quarter, 'qc', qc + tonumber(ARGV[1]), 'qp', qp)
redis.call('PEXPIRE', KEYS[1], 7200000)
return qc + tonumber(ARGV[1])
