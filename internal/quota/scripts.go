package quota

import "github.com/redis/go-redis/v9"

// The Lua scripts. Redis runs a script atomically: no other command runs
// between its first and last line, which is what makes the budget check and
// the reservation one step. Amounts are integers; Lua numbers are doubles,
// exact up to 2^53 micro-dollars (about 9 billion dollars), so they are
// only compared in Lua: what goes back to Redis is the decimal string it
// came in as (Lua would print a large number as 1e+14).

// luaHGetAll defines hgetall(key): the hash at key as a Lua table, one
// command for what would otherwise be a read per field.
const luaHGetAll = `
local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
`

// Commands are what a script costs Redis, and every write is copied to the
// append-only file: the scripts read each hash once, and set a counter's
// expiry only when they create it (a counter that exists always has one).
// A counter found missing where it must exist (its reserved amount would
// go negative: it expired or was evicted under a very late settle) gets
// its expiry again, and its reserved amount is set to 0 rather than left
// below: a negative amount would let later reservations past the limit.

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
local fields = {}
for i = 1, n do fields[i] = ARGV[8 + (i - 1) * 4 + 1] end
local lims = redis.call('HMGET', KEYS[3], unpack(fields))
local fresh = {}
for i = 1, n do
  local b = 8 + (i - 1) * 4
  local lim = tonumber(lims[i] or ARGV[b + 2])
  local v = redis.call('HMGET', KEYS[4 + i], 's', 'r')
  fresh[i] = not v[1] and not v[2]
  local s = tonumber(v[1] or '0')
  local r = tonumber(v[2] or '0')
  if lim > 0 and s + r + amount > lim then
    return {1, i, lim, s, r}
  end
end
local rec = {'state', 'held', 'amount', ARGV[1], 'at', ARGV[2], 'day', ARGV[4],
  'user', ARGV[5], 'dept', ARGV[6], 'n', ARGV[8]}
local indexed = false
for i = 1, n do
  local b = 8 + (i - 1) * 4
  local k = KEYS[4 + i]
  redis.call('HINCRBY', k, 'r', ARGV[1])
  if fresh[i] then
    redis.call('EXPIREAT', k, ARGV[b + 3])
    if ARGV[b + 4] == '1' then
      redis.call('SADD', KEYS[4], k)
      indexed = true
    end
  end
  rec[#rec + 1] = 'k' .. i
  rec[#rec + 1] = k
  rec[#rec + 1] = 'e' .. i
  rec[#rec + 1] = ARGV[b + 3]
end
if indexed then redis.call('EXPIREAT', KEYS[4], ARGV[7]) end
redis.call('HSET', KEYS[1], unpack(rec))
redis.call('EXPIREAT', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return {0, 'held'}
`)

// settleScript books the actual cost on the reservation's own counters.
//
// KEYS[1] reservation record, KEYS[2] pending zset, KEYS[3] its parts set
// (part.go; kept as long as the record). ARGV[1] actual,
// ARGV[2] job id, ARGV[3] seconds to keep the settled record.
//
// Returns the state found: "missing", "settled" (both no-ops), "held" or
// "released".
var settleScript = redis.NewScript(luaHGetAll + `
redis.call('ZREM', KEYS[2], ARGV[2])
local rec = hgetall(KEYS[1])
local st = rec.state
if not st then return 'missing' end
if st == 'settled' then return st end
local held = st == 'held' and rec.amount ~= '0'
local n = tonumber(rec.n)
local del = {}
for i = 1, n do
  local k = rec['k' .. i]
  local lost = not held
  if held and redis.call('HINCRBY', k, 'r', '-' .. rec.amount) < 0 then
    redis.call('HSET', k, 'r', 0)
    lost = true
  end
  redis.call('HINCRBY', k, 's', ARGV[1])
  if lost then redis.call('EXPIREAT', k, rec['e' .. i]) end
  del[#del + 1] = 'k' .. i
  del[#del + 1] = 'e' .. i
end
if n > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
redis.call('HSET', KEYS[1], 'state', 'settled', 'actual', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if rec.p then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return st
`)

// releaseScript gives a held reservation back.
//
// KEYS[1] reservation record, KEYS[2] pending zset, KEYS[3] its parts set
// (part.go: a part closed after the release must still find it, so it
// lives as long as the record; no-op when there is none). ARGV[1] job id,
// ARGV[2] seconds to keep the released record.
//
// Returns the state found: "missing", "settled", "released" (no-ops) or
// "held".
var releaseScript = redis.NewScript(luaHGetAll + `
redis.call('ZREM', KEYS[2], ARGV[1])
local rec = hgetall(KEYS[1])
local st = rec.state
if st ~= 'held' then return st or 'missing' end
for i = 1, tonumber(rec.n) do
  local k = rec['k' .. i]
  local lost = rec.amount == '0'
  if not lost and redis.call('HINCRBY', k, 'r', '-' .. rec.amount) < 0 then
    redis.call('HSET', k, 'r', 0)
    lost = true
  end
  if lost then redis.call('EXPIREAT', k, rec['e' .. i]) end
end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
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
