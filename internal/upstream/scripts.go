package upstream

import "github.com/redis/go-redis/v9"

// The Lua scripts below are the only writers of a node's shared health.
// Each runs atomically in Redis, so concurrent outcomes reported by many
// processes never lose an update (no read-modify-write from Go). Times are
// Unix milliseconds from FleetOptions.Now, passed in ARGV, so that a test
// clock drives cooldowns and windows; latencies are microseconds.
//
// Node hash fields (KeyPrefix + "node:" + name):
//
//	state        "" (healthy) | "unhealthy" | "exhausted"
//	reason       why state is set: "passive" | "probe" | "billing"
//	until        ms; no request is admitted before it (429 cooldown,
//	             unhealthy cooldown, exhausted until)
//	check        ms of the last outcome or probe
//	requests     calls finished on the node
//	errors       calls that failed because of the node (not bad requests)
//	ewma         decaying average of µs per output token (successes); a
//	             sample counts at most 4× the average, so one pause does
//	             not bench a node while a real slowdown shows in a few calls
//	samples      successes that fed ewma
//	seen_at      ms of the last ewma sample, or of the start of a
//	             response_time exploration (a call sent to a node without
//	             a recent sample)
//	probe_fails  consecutive failed probes
//	probe_us     latency of the last probe
//	last_error   caller-safe message of the last node failure

// snapshotScript reads every node's routing state in one round trip,
// refreshes this process's heartbeat and reaps the in-flight counts of
// processes that stopped heart-beating (crashed workers).
//
// KEYS: 1 inflight hash, 2 instances zset, 3 usage hash of this minute,
// 4..3+n node hashes, 4+n..3+2n trial keys.
// ARGV: 1 now, 2 reap cutoff, 3 instance id, 4..3+n node names.
// Returns one string per node, space-separated: state (possibly empty),
// until, ewma, samples, inflight, rpm, tpm, trial (0/1), seen_at. The trial key is
// read only for unhealthy nodes, the only ones that have one.
var snapshotScript = redis.NewScript(`
local n = #ARGV - 3
local inst = ARGV[3]
redis.call('ZADD', KEYS[2], ARGV[1], inst)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 16)
for _, d in ipairs(dead) do
  if d ~= inst then
    for i = 1, n do
      local name = ARGV[3 + i]
      local f = name .. '|' .. d
      local v = tonumber(redis.call('HGET', KEYS[1], f))
      if v then
        redis.call('HDEL', KEYS[1], f)
        if v > 0 and redis.call('HINCRBY', KEYS[1], name, -v) < 0 then
          redis.call('HSET', KEYS[1], name, 0)
        end
      end
    end
    redis.call('ZREM', KEYS[2], d)
  end
end
local names, ufields = {}, {}
for i = 1, n do
  names[i] = ARGV[3 + i]
  ufields[2 * i - 1] = names[i] .. '|r'
  ufields[2 * i] = names[i] .. '|t'
end
local inflight = redis.call('HMGET', KEYS[1], unpack(names))
local usage = redis.call('HMGET', KEYS[3], unpack(ufields))
local out = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[3 + i], 'state', 'until', 'ewma', 'samples', 'seen_at')
  local trial = 0
  if h[1] == 'unhealthy' then trial = redis.call('EXISTS', KEYS[3 + n + i]) end
  out[i] = (h[1] or '') .. ' ' .. (h[2] or '0') .. ' ' .. (h[3] or '0') .. ' ' .. (h[4] or '0') .. ' ' ..
    (inflight[i] or '0') .. ' ' .. (usage[2 * i - 1] or '0') .. ' ' .. (usage[2 * i] or '0') .. ' ' .. trial .. ' ' ..
    (h[5] or '0')
end
return out
`)

// admitScript admits one call on a node against the authoritative shared
// state (a process's cached snapshot may be stale): it refuses a node that
// is cooling, whose half-open trial is taken, or that is over its RPM/TPM;
// otherwise it takes the trial slot when the node is half-open, charges the
// minute's usage and counts the call in flight.
//
// KEYS: 1 node hash, 2 trial key, 3 inflight hash, 4 instances zset,
// 5 usage hash of this minute.
// ARGV: 1 now, 2 name, 3 instance id, 4 rpm, 5 tpm, 6 estimated tokens,
// 7 trial TTL ms, 8 explore (0/1: stamp seen_at, so that other processes
// do not explore the same node at once).
// Returns {code, x}: code >= 0 is the node's new in-flight total and x is
// 1 when this call is the half-open trial; code -1 cooling (x = until), -2
// trial taken, -3 over RPM, -4 over TPM.
var admitScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local name, inst = ARGV[2], ARGV[3]
local h = redis.call('HMGET', KEYS[1], 'state', 'until')
local untl = tonumber(h[2]) or 0
if untl > now then return {-1, untl} end
local trial = 0
if h[1] == 'unhealthy' then
  if not redis.call('SET', KEYS[2], inst, 'NX', 'PX', ARGV[7]) then return {-2, 0} end
  trial = 1
end
local rpm, tpm, est = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rpm > 0 or tpm > 0 then
  local u = redis.call('HMGET', KEYS[5], name .. '|r', name .. '|t')
  local r, t = tonumber(u[1]) or 0, tonumber(u[2]) or 0
  local refuse = 0
  if rpm > 0 and r >= rpm then
    refuse = -3
  elseif tpm > 0 and t > 0 and t + est > tpm then
    refuse = -4
  end
  if refuse ~= 0 then
    if trial == 1 then redis.call('DEL', KEYS[2]) end
    return {refuse, 0}
  end
  redis.call('HINCRBY', KEYS[5], name .. '|r', 1)
  if est > 0 then redis.call('HINCRBY', KEYS[5], name .. '|t', est) end
  redis.call('PEXPIRE', KEYS[5], 120000)
end
local total = redis.call('HINCRBY', KEYS[3], name, 1)
redis.call('HINCRBY', KEYS[3], name .. '|' .. inst, 1)
redis.call('ZADD', KEYS[4], now, inst)
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'seen_at', now) end
return {total, trial}
`)

// finishScript ends an admitted call: it takes it out of flight, releases
// the trial slot, corrects the TPM estimate and applies the outcome to the
// node's health (see the package documentation for the rules).
//
// KEYS: 1 node hash, 2 failures zset, 3 latency list, 4 trial key,
// 5 inflight hash, 6 instances zset, 7 usage hash of the admission minute.
// ARGV: 1 now, 2 name, 3 instance id, 4 outcome (ok|fail|rate|bill|neutral),
// 5 latency µs, 6 output tokens, 7 until ms (rate, bill), 8 window ms,
// 9 threshold, 10 cooldown ms, 11 EWMA alpha, 12 trial (0/1),
// 13 tracked (0/1), 14 TPM correction, 15 error message, 16 failure id.
// Returns {inflight (-1 unknown), state, until, ewma, samples, event}.
var finishScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local name, inst = ARGV[2], ARGV[3]
local total = -1
if ARGV[13] == '1' then
  local f = name .. '|' .. inst
  local mine = tonumber(redis.call('HGET', KEYS[5], f))
  if mine and mine > 0 then
    if mine <= 1 then redis.call('HDEL', KEYS[5], f) else redis.call('HINCRBY', KEYS[5], f, -1) end
    total = redis.call('HINCRBY', KEYS[5], name, -1)
    if total < 0 then
      redis.call('HSET', KEYS[5], name, 0)
      total = 0
    end
  end
  redis.call('ZADD', KEYS[6], now, inst)
end
local d = tonumber(ARGV[14])
if d ~= 0 and redis.call('EXISTS', KEYS[7]) == 1 then redis.call('HINCRBY', KEYS[7], name .. '|t', d) end
local trial = ARGV[12] == '1'
if trial and redis.call('GET', KEYS[4]) == inst then redis.call('DEL', KEYS[4]) end
redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('HSET', KEYS[1], 'check', now)
local h = redis.call('HMGET', KEYS[1], 'state', 'until', 'ewma', 'samples')
local state, untl = h[1] or '', tonumber(h[2]) or 0
local ewma, samples = tonumber(h[3]) or 0, tonumber(h[4]) or 0
local event = ''
local o = ARGV[4]
if o == 'ok' then
  local us = tonumber(ARGV[5])
  redis.call('LPUSH', KEYS[3], us)
  redis.call('LTRIM', KEYS[3], 0, 99)
  local tok = tonumber(ARGV[6])
  if tok > 0 then
    local x = us / tok
    if samples == 0 then
      ewma = x
    else
      if x > 4 * ewma then x = 4 * ewma end
      local a = tonumber(ARGV[11])
      ewma = a * x + (1 - a) * ewma
    end
    samples = samples + 1
    redis.call('HSET', KEYS[1], 'ewma', tostring(ewma), 'samples', samples, 'seen_at', now)
  end
  if state == 'unhealthy' and trial then
    redis.call('HDEL', KEYS[1], 'state', 'reason')
    redis.call('HSET', KEYS[1], 'probe_fails', 0)
    redis.call('DEL', KEYS[2])
    state = ''
    event = 'recovered'
  elseif state == 'exhausted' and untl <= now then
    redis.call('HDEL', KEYS[1], 'state', 'reason')
    state = ''
  end
elseif o ~= 'neutral' then
  redis.call('HINCRBY', KEYS[1], 'errors', 1)
  redis.call('HSET', KEYS[1], 'last_error', ARGV[15])
  if o == 'fail' then
    local w = tonumber(ARGV[8])
    redis.call('ZADD', KEYS[2], now, ARGV[16])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - w)
    redis.call('PEXPIRE', KEYS[2], w)
    local n = redis.call('ZCARD', KEYS[2])
    if state == 'unhealthy' then
      if trial then
        untl = now + tonumber(ARGV[10])
        redis.call('HSET', KEYS[1], 'until', untl)
        event = 'reopened'
      end
    elseif n >= tonumber(ARGV[9]) then
      untl = now + tonumber(ARGV[10])
      state = 'unhealthy'
      redis.call('HSET', KEYS[1], 'state', state, 'reason', 'passive', 'until', untl)
      event = 'ejected'
    end
  elseif o == 'rate' then
    local u = tonumber(ARGV[7])
    if u > untl then
      untl = u
      redis.call('HSET', KEYS[1], 'until', untl)
    end
    event = 'cooling'
  elseif o == 'bill' then
    untl = tonumber(ARGV[7])
    state = 'exhausted'
    redis.call('HSET', KEYS[1], 'state', state, 'reason', 'billing', 'until', untl)
    event = 'exhausted'
  end
end
return {total, state, tostring(untl), tostring(ewma), samples, event}
`)

// probeScript records an active probe.
//
// KEYS: 1 node hash.
// ARGV: 1 now, 2 ok (0/1), 3 latency µs, 4 failed probes that eject,
// 5 cooldown ms, 6 error message.
// Returns {state, until, event}.
var probeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'check', now, 'probe_us', ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'state', 'until', 'reason')
local state, untl, reason = h[1] or '', tonumber(h[2]) or 0, h[3] or ''
local event = ''
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'probe_fails', 0)
  if state == 'unhealthy' and reason == 'probe' then
    redis.call('HDEL', KEYS[1], 'state', 'reason')
    untl = now
    redis.call('HSET', KEYS[1], 'until', untl)
    state = ''
    event = 'recovered'
  end
else
  redis.call('HSET', KEYS[1], 'last_error', ARGV[6])
  local pf = redis.call('HINCRBY', KEYS[1], 'probe_fails', 1)
  if pf >= tonumber(ARGV[4]) and not (state == 'exhausted' and untl > now) then
    local u = now + tonumber(ARGV[5])
    if u > untl then untl = u end
    if state ~= 'unhealthy' then event = 'ejected' end
    state = 'unhealthy'
    redis.call('HSET', KEYS[1], 'state', state, 'reason', 'probe', 'until', untl)
  end
end
return {state, tostring(untl), event}
`)
