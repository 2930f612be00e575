//! The Lua scripts behind [`super::RedisStore`]: each is one atomic read-decide-write on one
//! conversation hash, and every write refreshes the key's TTL. Every write but BEGIN's count
//! bumps the write mark `w` (see [`super::cache`]).

/// Counts one call: creates the conversation if missing. ARGV: event, now_ms, ttl_ms,
/// subscription, till branch, till workplace (`''` when the call had none), a fresh write
/// mark for a new conversation, the write mark of the caller's cached snapshot (`''` when
/// it has none). The count comes first: `HINCRBY` makes a missing hash with `n` 1, which
/// says the call is the first (one command fewer than asking `EXISTS`; this runs on every
/// call). Returns the whole hash, or only the count when the conversation is not new and
/// nothing wrote to it since the caller's snapshot (`w` is still its mark).
pub(super) const BEGIN: &str = r"
local k = KEYS[1]
local n = redis.call('HINCRBY', k, 'n', 1)
if n == 1 then
  redis.call('HSET', k, 'ev', ARGV[1], 'fs', ARGV[2], 'ls', ARGV[2], 'v', '0',
    'sb', ARGV[4], 'tb', ARGV[5], 'tw', ARGV[6], 'w', ARGV[7])
else
  redis.call('HSET', k, 'ls', ARGV[2])
end
redis.call('PEXPIRE', k, ARGV[3])
if n > 1 and ARGV[8] ~= '' and redis.call('HGET', k, 'w') == ARGV[8] then return n end
return redis.call('HGETALL', k)
";

/// Compare-and-set on `v`. ARGV: version, now_ms, ttl_ms, state op (`k` keep, `c` clear,
/// `s` set), state, final answer op (`k` keep, `s` set), final answer, last decision op
/// (`k` keep, `s` set), decision, message, customer message.
/// Returns false if missing, 1 if saved, the whole record on a conflict.
pub(super) const COMMIT: &str = r"
local k = KEYS[1]
local v = redis.call('HGET', k, 'v')
if not v then return false end
if v ~= ARGV[1] then return redis.call('HGETALL', k) end
redis.call('HINCRBY', k, 'v', 1)
redis.call('HINCRBY', k, 'w', 1)
redis.call('HSET', k, 'ls', ARGV[2])
if ARGV[4] == 's' then
  redis.call('HSET', k, 'st', ARGV[5])
elseif ARGV[4] == 'c' then
  redis.call('HDEL', k, 'st')
end
if ARGV[6] == 's' then redis.call('HSET', k, 'fa', ARGV[7]) end
if ARGV[8] == 's' then redis.call('HSET', k, 'dc', ARGV[9], 'ms', ARGV[10], 'cm', ARGV[11]) end
redis.call('PEXPIRE', k, ARGV[3])
return 1
";

/// Takes the forward's lease if nobody holds a live one. ARGV: field, now_ms, new value
/// (`p:{lease_until_ms}`), ttl_ms. Returns 1 claimed, 0 not, -1 for an unreadable lease.
pub(super) const CLAIM: &str = r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
local f = redis.call('HGET', k, ARGV[1])
if f then
  if string.sub(f, 1, 2) ~= 'p:' then return 0 end
  local lease = tonumber(string.sub(f, 3))
  if lease == nil then return -1 end
  if lease > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', k, ARGV[1], ARGV[3])
redis.call('HINCRBY', k, 'w', 1)
redis.call('PEXPIRE', k, ARGV[4])
return 1
";

/// Extends a pending forward's lease. ARGV: field, new value (`p:{lease_until_ms}`), ttl_ms.
/// Returns 1 renewed, 0 when the forward is no longer pending (or the key is gone).
pub(super) const RENEW: &str = r"
local k = KEYS[1]
local f = redis.call('HGET', k, ARGV[1])
if not f or string.sub(f, 1, 2) ~= 'p:' then return 0 end
redis.call('HSET', k, ARGV[1], ARGV[2])
redis.call('HINCRBY', k, 'w', 1)
redis.call('PEXPIRE', k, ARGV[3])
return 1
";

/// Records a forward's reply, never resurrecting an expired conversation.
/// ARGV: field, value (`d:{reply JSON}`), ttl_ms.
pub(super) const COMPLETE: &str = r"
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, ARGV[1], ARGV[2])
redis.call('HINCRBY', k, 'w', 1)
redis.call('PEXPIRE', k, ARGV[3])
return 1
";

/// One row per key for the admin list, without state or bodies leaving the server:
/// `{ev, fs, ls, n, finished 0|1, sb, tb, tw, dc, ms, cm, pending forward names...}`, or
/// `{}` if the key is gone.
pub(super) const SUMMARIES: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  local row = {}
  if redis.call('TYPE', k).ok == 'hash' then
    local h = redis.call('HGETALL', k)
    local r = {ev = '', fs = '0', ls = '0', n = '0', sb = '', tb = '', tw = '', dc = '', ms = '', cm = ''}
    local fin = '0'
    local pending = {}
    for j = 1, #h, 2 do
      local f, v = h[j], h[j + 1]
      if r[f] then r[f] = v
      elseif f == 'fa' then fin = '1'
      elseif string.sub(f, 1, 3) == 'fw:' and string.sub(v, 1, 2) == 'p:' then
        pending[#pending + 1] = string.sub(f, 4)
      end
    end
    row = {r.ev, r.fs, r.ls, r.n, fin, r.sb, r.tb, r.tw, r.dc, r.ms, r.cm}
    for _, p in ipairs(pending) do row[#row + 1] = p end
  end
  out[i] = row
end
return out
";

/// How many of KEYS are conversations that have not finished (no `fa`).
pub(super) const ACTIVE: &str = r"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('TYPE', k).ok == 'hash' and redis.call('HEXISTS', k, 'fa') == 0 then
    n = n + 1
  end
end
return n
";
