package quota

import "github.com/redis/go-redis/v9"

// The Lua scripts. Redis runs a script atomically: no other command runs
// between its first and last line, which is what makes the budget check and
// the reservation one step. Amounts are integers; Lua numbers are doubles,
// exact up to 2^53 micro-dollars (about 9 billion dollars), so they are
// only compared in Lua: what goes back to Redis is the decimal string it
// came in as (Lua would print a large number as 1e+14).

// reserveScript checks every scope and, only if all pass, reserves.
//
// KEYS[1] reservation record, KEYS[2] pending zset, KEYS[3] limits hash,
// KEYS[4] the day's scope index set, KEYS[5..4+n] the scope counters.
// ARGV[1] amount, ARGV[2] now (ms), ARGV[3] job id, ARGV[4] day,
// ARGV[5] user, ARGV[6] department, ARGV[7] record expiry (unix s),
// ARGV[8] n, then per scope i: limit field, default limit, counter expiry
// (unix s), "1" to add the counter to the day's index.
//
// Returns {0, state} when the job already has a record (no-op), {0, "held"}
// when reserved, {1, i, limit, spent, reserved} when scope i refuses.
var reserveScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if st then return {0, st} end
local amount = tonumber(ARGV[1])
local n = tonumber(ARGV[8])
for i = 1, n do
  local b = 8 + (i - 1) * 4
  local lim = tonumber(redis.call('HGET', KEYS[3], ARGV[b + 1]) or ARGV[b + 2])
  local v = redis.call('HMGET', KEYS[4 + i], 's', 'r')
  local s = tonumber(v[1] or '0')
  local r = tonumber(v[2] or '0')
  if lim > 0 and s + r + amount > lim then
    return {1, i, lim, s, r}
  end
end
local rec = {'state', 'held', 'amount', ARGV[1], 'at', ARGV[2], 'day', ARGV[4],
  'user', ARGV[5], 'dept', ARGV[6], 'n', ARGV[8]}
for i = 1, n do
  local b = 8 + (i - 1) * 4
  local k = KEYS[4 + i]
  redis.call('HINCRBY', k, 'r', ARGV[1])
  redis.call('EXPIREAT', k, ARGV[b + 3])
  if ARGV[b + 4] == '1' then redis.call('SADD', KEYS[4], k) end
  rec[#rec + 1] = 'k' .. i
  rec[#rec + 1] = k
  rec[#rec + 1] = 'e' .. i
  rec[#rec + 1] = ARGV[b + 3]
end
redis.call('EXPIREAT', KEYS[4], ARGV[7])
redis.call('HSET', KEYS[1], unpack(rec))
redis.call('EXPIREAT', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return {0, 'held'}
`)

// settleScript books the actual cost on the reservation's own counters.
//
// KEYS[1] reservation record, KEYS[2] pending zset. ARGV[1] actual,
// ARGV[2] job id, ARGV[3] seconds to keep the settled record.
//
// Returns the state found: "missing", "settled" (both no-ops), "held" or
// "released".
var settleScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[2])
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'settled' then return st end
local neg = '-' .. redis.call('HGET', KEYS[1], 'amount')
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
for i = 1, n do
  local f = redis.call('HMGET', KEYS[1], 'k' .. i, 'e' .. i)
  if st == 'held' and neg ~= '-0' then redis.call('HINCRBY', f[1], 'r', neg) end
  redis.call('HINCRBY', f[1], 's', ARGV[1])
  redis.call('EXPIREAT', f[1], f[2])
  redis.call('HDEL', KEYS[1], 'k' .. i, 'e' .. i)
end
redis.call('HSET', KEYS[1], 'state', 'settled', 'actual', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return st
`)

// releaseScript gives a held reservation back.
//
// KEYS[1] reservation record, KEYS[2] pending zset. ARGV[1] job id,
// ARGV[2] seconds to keep the released record.
//
// Returns the state found: "missing", "settled", "released" (no-ops) or
// "held".
var releaseScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'held' then return st or 'missing' end
local neg = '-' .. redis.call('HGET', KEYS[1], 'amount')
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
for i = 1, n do
  local f = redis.call('HMGET', KEYS[1], 'k' .. i, 'e' .. i)
  if neg ~= '-0' then redis.call('HINCRBY', f[1], 'r', neg) end
  redis.call('EXPIREAT', f[1], f[2])
end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return st
`)

// rebuildScript rewrites one day's spent counters.
//
// KEYS[1] the day's scope index set, KEYS[2] the day's total, KEYS[3] its
// month's total. ARGV[1] day expiry, ARGV[2] month expiry (unix s),
// ARGV[3] the day's new total, ARGV[4] m, then m pairs of counter key and
// new spent. Counters in the index but not in the pairs get 0. The month
// total moves by the change of the day total.
//
// Returns that change.
var rebuildScript = redis.NewScript(`
local m = tonumber(ARGV[4])
local want = {}
for i = 1, m do want[ARGV[3 + 2 * i]] = ARGV[4 + 2 * i] end
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not want[k] then
    redis.call('HSET', k, 's', 0)
    redis.call('EXPIREAT', k, ARGV[1])
  end
end
for k, v in pairs(want) do
  redis.call('HSET', k, 's', v)
  redis.call('EXPIREAT', k, ARGV[1])
  redis.call('SADD', KEYS[1], k)
end
if m > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[1]) end
local old = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local delta = tonumber(ARGV[3]) - old
redis.call('HSET', KEYS[2], 's', ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[1])
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[3], 's', string.format('%d', delta))
  redis.call('EXPIREAT', KEYS[3], ARGV[2])
end
return delta
`)

// countScript counts one request against a daily limit.
//
// KEYS[1] the counter. ARGV[1] limit, ARGV[2] expiry (unix s).
// Returns {1, count} when counted, {0, count} when the limit is reached.
var countScript = redis.NewScript(`
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v >= tonumber(ARGV[1]) then return {0, v} end
v = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return {1, v}
`)
