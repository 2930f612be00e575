//! The Lua scripts behind [`super::RedisOutbox`]: each is one atomic change of one
//! upstream's queue (all its keys share a hash tag). KEYS, where a script has them:
//! due, age, dead, then the record.

/// ARGV: id, event, key, subscription, body, now. 1 if queued, 0 if it was there.
pub(super) const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('HSET', KEYS[4], 'ev', ARGV[2], 'k', ARGV[3], 'sub', ARGV[4], 'b', ARGV[5],
  'q', ARGV[6], 'n', '0', 'nx', ARGV[6], 'st', 'p')
redis.call('ZADD', KEYS[1], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return 1
";

/// KEYS: due. ARGV: now, claim end, limit, record prefix. The due ids, each moved to the
/// claim's end, with their records: `[id, fields, id, fields, ...]`.
pub(super) const CLAIM: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[4] .. id)
end
return out
";

/// ARGV: id, next attempt, error, `r` (retry) or `d` (dead). Only a pending delivery.
pub(super) const FAILED: &str = r"
if redis.call('HGET', KEYS[4], 'st') ~= 'p' then return 0 end
redis.call('HINCRBY', KEYS[4], 'n', 1)
redis.call('HSET', KEYS[4], 'e', ARGV[3])
if ARGV[4] == 'r' then
  redis.call('HSET', KEYS[4], 'nx', ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('HSET', KEYS[4], 'st', 'd')
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[4], 'q'), ARGV[1])
end
return 1
";

/// KEYS: due, record. ARGV: id, now. A claim given back: due now.
pub(super) const RELEASE: &str = r"
if redis.call('HGET', KEYS[2], 'st') ~= 'p' then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
return 1
";

/// ARGV: id, now. Due now; a dead one afresh (age and attempts). 0 if unknown.
pub(super) const RETRY: &str = r"
local st = redis.call('HGET', KEYS[4], 'st')
if not st then return 0 end
if st == 'd' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[4], 'st', 'p', 'q', ARGV[2], 'n', '0')
  redis.call('HDEL', KEYS[4], 'e')
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('HSET', KEYS[4], 'nx', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
";

/// KEYS: due, age, dead. ARGV: now, record prefix. Every dead one afresh; how many.
pub(super) const RETRY_DEAD: &str = r"
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, id in ipairs(ids) do
  local rec = ARGV[2] .. id
  redis.call('HSET', rec, 'st', 'p', 'q', ARGV[1], 'n', '0', 'nx', ARGV[1])
  redis.call('HDEL', rec, 'e')
  redis.call('ZADD', KEYS[1], ARGV[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
end
redis.call('DEL', KEYS[3])
return #ids
";

/// ARGV: id. Forgets the delivery; 0 if unknown.
pub(super) const DELETE: &str = r"
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return 1
";

/// KEYS: due, age, dead. ARGV: record prefix, then ids. Each one forgotten (delivered);
/// how many were there.
pub(super) const DELIVERED_MANY: &str = r"
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  n = n + redis.call('DEL', ARGV[1] .. id)
end
return n
";

/// KEYS: a sorted set (due or dead). ARGV: limit, record prefix. `[id, fields, ...]`.
pub(super) const LIST: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[2] .. id)
end
return out
";

/// KEYS: due, age, dead. `[pending, dead, oldest queued ms or false]`.
pub(super) const COUNTS: &str = r"
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local first = false
if oldest[2] then first = oldest[2] end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[3]), first}
";
