//! The Lua scripts: one per contract operation, each touching keys of one hash tag only, so
//! each is one atomic step on one cluster node. Loaded once and called by hash (`EVALSHA`).
//!
//! Layout, for prefix `P` and route `rr` (two hex digits, the first byte of the digest):
//! - `P:{rrr}:s:<digest>`: a record, a hash. `v` format version, `h` handle, `c`/`l`/`e`
//!   created, last seen, expires (ms), `u` user, `dd` the deadline under which the user's
//!   directory lists this route, `ua`/`ip` login device, `i`/`a` expiry overrides (ms), `f`
//!   flash messages (JSON array), `d:<key>` one field per data key (raw JSON). A moved
//!   marker is a hash with `mv` and `e` only. The key expires at `e` (native TTL).
//! - `P:{rrr}:all`: sorted set of the route's records by expiry, for counting and purging.
//! - `P:{rrr}:u:<user>`: the user's sessions in this route, by expiry (the user index).
//! - `P:{rrr}:users`: the route's users, by directory deadline, for purging indexes.
//! - `P:{u:<user>}:routes`: the user's directory: routes holding the user's sessions, each
//!   with a deadline no session registered under it outlives.

/// Helpers every script starts with.
const PRELUDE: &str = r"
local function expire_at_max(key)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', key, top[2]) end
end
local function prune(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end
-- mv, e, u, dd of a record; the reason it is not live, if it is not.
local function live(key, now)
  local st = redis.call('HMGET', key, 'mv', 'e', 'u', 'dd')
  if not st[2] then return st, 'gone' end
  if st[1] then
    if tonumber(st[2]) > now then return st, 'moved' end
    return st, 'gone'
  end
  if tonumber(st[2]) <= now then return st, 'gone' end
  return st, nil
end
local function hset_from(key, args, first, last)
  local i = first
  while i <= last do
    local stop = math.min(i + 999, last)
    redis.call('HSET', key, unpack(args, i, stop))
    i = stop + 1
  end
end
-- Applies the content part of a patch, read from args[at..]:
-- clear, expiry_set, idle, abs, flashes, nset, (key, value)*, nremove, key*.
local function apply_patch(key, args, at)
  if args[at] == '1' then
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.sub(name, 1, 2) == 'd:' then redis.call('HDEL', key, name) end
    end
  end
  if args[at + 1] == '1' then
    redis.call('HDEL', key, 'i', 'a')
    if args[at + 2] ~= '' then redis.call('HSET', key, 'i', args[at + 2]) end
    if args[at + 3] ~= '' then redis.call('HSET', key, 'a', args[at + 3]) end
  end
  local flashes = args[at + 4]
  if flashes ~= '' then
    local f = redis.call('HGET', key, 'f')
    if f and f ~= '[]' then
      f = string.sub(f, 1, -2) .. ',' .. string.sub(flashes, 2)
    else
      f = flashes
    end
    redis.call('HSET', key, 'f', f)
  end
  local i = at + 5
  local nset = tonumber(args[i]); i = i + 1
  for _ = 1, nset do
    redis.call('HSET', key, 'd:' .. args[i], args[i + 1]); i = i + 2
  end
  local nremove = tonumber(args[i]); i = i + 1
  for _ = 1, nremove do
    redis.call('HDEL', key, 'd:' .. args[i]); i = i + 1
  end
end
-- Puts digest `hex` with expiry `e` into the route-wide set and, with a user, the user's
-- index and the route's user registry.
-- The route-wide set and registry are one key each per route (256 in all) and are pruned by
-- the purge, so they need no TTL; a user's index expires with its last session.
local function index(tag, hex, e, user, dd, now)
  redis.call('ZADD', tag .. ':all', e, hex)
  if user then
    local idx = tag .. ':u:' .. user
    prune(idx, now)
    redis.call('ZADD', idx, e, hex)
    expire_at_max(idx)
    redis.call('ZADD', tag .. ':users', 'GT', dd, user)
  end
end
local function unindex(tag, hex, user)
  redis.call('ZREM', tag .. ':all', hex)
  if user then redis.call('ZREM', tag .. ':u:' .. user, hex) end
end
";

/// KEYS: record. ARGV: now, tag, hex, user or '', e, dd, then HSET field/value pairs.
/// Returns 1, or 0 if the digest is taken.
pub(crate) const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
hset_from(KEYS[1], ARGV, 7, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
local user = ARGV[4]
if user == '' then user = nil end
index(ARGV[2], ARGV[3], ARGV[5], user, ARGV[6], tonumber(ARGV[1]))
return 1
";

/// KEYS: record. ARGV: now, tag, hex, touch_l or '', touch_e or '', new_dd or '', then the
/// patch block. Returns 'done', 'gone', 'moved', or {'bump', user, expiry} when the touch
/// would outlive the user's directory entry (nothing written).
pub(crate) const APPLY: &str = r"
local now = tonumber(ARGV[1])
local st, missing = live(KEYS[1], now)
if missing then return missing end
local user = st[3]
local touch_e = ARGV[5]
if user and touch_e ~= '' and ARGV[6] == '' and tonumber(touch_e) > tonumber(st[4] or '0') then
  return {'bump', user, touch_e}
end
apply_patch(KEYS[1], ARGV, 7)
local dd = st[4]
if ARGV[6] ~= '' then
  dd = ARGV[6]
  redis.call('HSET', KEYS[1], 'dd', dd)
end
if touch_e ~= '' then
  redis.call('HSET', KEYS[1], 'l', ARGV[4], 'e', touch_e)
  redis.call('PEXPIREAT', KEYS[1], touch_e)
  index(ARGV[2], ARGV[3], touch_e, user, dd, now)
end
return 'done'
";

/// KEYS: old record, new record (same tag). ARGV: now, tag, old hex, new hex, marker until,
/// bind ('1'/'0'), bind user, ua, ip, created or '', new_dd or '', touch_l or '', touch_e or
/// '' (keep the old times), then the patch block. Returns 'done', 'gone', 'moved', 'exists',
/// or {'bump', user, expiry}.
pub(crate) const CYCLE: &str = r"
local now = tonumber(ARGV[1])
local st, missing = live(KEYS[1], now)
if missing then return missing end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'exists' end
local old_user = st[3]
local user = old_user
if ARGV[6] == '1' then user = ARGV[7] end
local dd = st[4]
if ARGV[11] ~= '' then dd = ARGV[11] end
local touch_l = ARGV[12]
local touch_e = ARGV[13]
if touch_e == '' then
  touch_e = st[2]
  touch_l = redis.call('HGET', KEYS[1], 'l')
end
if user and tonumber(touch_e) > tonumber(dd or '0') then return {'bump', user, touch_e} end
redis.call('COPY', KEYS[1], KEYS[2])
apply_patch(KEYS[2], ARGV, 14)
if ARGV[6] == '1' then
  redis.call('HDEL', KEYS[2], 'ua', 'ip')
  redis.call('HSET', KEYS[2], 'u', user)
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'ua', ARGV[8]) end
  if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'ip', ARGV[9]) end
end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], 'c', ARGV[10]) end
if user then redis.call('HSET', KEYS[2], 'dd', dd) end
redis.call('HSET', KEYS[2], 'l', touch_l, 'e', touch_e)
redis.call('PEXPIREAT', KEYS[2], touch_e)
redis.call('DEL', KEYS[1])
unindex(ARGV[2], ARGV[3], old_user)
if tonumber(ARGV[5]) > now then
  redis.call('HSET', KEYS[1], 'mv', '1', 'e', ARGV[5])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
end
index(ARGV[2], ARGV[4], touch_e, user, dd, now)
return 'done'
";

/// KEYS: record. ARGV: now, tag, hex. Returns 1 if a live record was deleted.
pub(crate) const DESTROY: &str = r"
local st = redis.call('HMGET', KEYS[1], 'mv', 'e', 'u')
if not st[2] or st[1] then return 0 end
redis.call('DEL', KEYS[1])
unindex(ARGV[2], ARGV[3], st[3])
if tonumber(st[2]) > tonumber(ARGV[1]) then return 1 end
return 0
";

/// KEYS: record. ARGV: now. Returns the flashes (JSON) and removes them, or nil.
pub(crate) const TAKE_FLASHES: &str = r"
local st, missing = live(KEYS[1], tonumber(ARGV[1]))
if missing then return nil end
local f = redis.call('HGET', KEYS[1], 'f')
redis.call('HDEL', KEYS[1], 'f')
return f or '[]'
";

/// KEYS: user index of one route. ARGV: now, tag. Returns h, c, l, e, ua, ip per live
/// session, and drops index entries whose record is gone.
pub(crate) const LIST_ROUTE: &str = r"
local now = tonumber(ARGV[1])
prune(KEYS[1], now)
local out = {}
for _, hex in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local r = redis.call('HMGET', ARGV[2] .. ':s:' .. hex, 'mv', 'e', 'h', 'c', 'l', 'ua', 'ip')
  if r[2] and not r[1] and tonumber(r[2]) > now then
    for j = 3, 7 do table.insert(out, r[j] or '') end
    table.insert(out, r[2])
  elseif not r[2] or r[1] then
    redis.call('ZREM', KEYS[1], hex)
  end
end
return out
";

/// KEYS: user index of one route. ARGV: now, tag, user, only handle or '', except handle or
/// ''. Destroys the matching sessions; returns how many were live.
pub(crate) const DESTROY_ROUTE: &str = r"
local now = tonumber(ARGV[1])
local live_count = 0
for _, hex in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. ':s:' .. hex
  local r = redis.call('HMGET', key, 'mv', 'e', 'h')
  local handle = r[3] or ''
  local chosen = (ARGV[4] == '' or handle == ARGV[4]) and (ARGV[5] == '' or handle ~= ARGV[5])
  if chosen then
    if r[2] and not r[1] then
      redis.call('DEL', key)
      if tonumber(r[2]) > now then live_count = live_count + 1 end
    end
    unindex(ARGV[2], hex, ARGV[3])
  end
end
return live_count
";

/// KEYS: a user's directory. ARGV: now, then (deadline, route) pairs to add (raise only).
/// Returns the routes whose deadline is after now.
pub(crate) const DIRECTORY: &str = r"
local now = tonumber(ARGV[1])
prune(KEYS[1], now)
local i = 2
while i < #ARGV do
  redis.call('ZADD', KEYS[1], 'GT', ARGV[i], ARGV[i + 1])
  i = i + 2
end
expire_at_max(KEYS[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// KEYS: the route's set of records, its user registry. ARGV: now, tag. Prunes expired
/// entries of both and of every user index in the route; returns how many entries it removed.
pub(crate) const PURGE_ROUTE: &str = r"
local now = tonumber(ARGV[1])
local tag = ARGV[2]
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local users = KEYS[2]
for _, user in ipairs(redis.call('ZRANGE', users, 0, -1)) do
  local idx = tag .. ':u:' .. user
  removed = removed + redis.call('ZREMRANGEBYSCORE', idx, '-inf', now)
  if redis.call('EXISTS', idx) == 0 then redis.call('ZREM', users, user) end
end
prune(users, now)
return removed
";

/// KEYS: the route's set of records. ARGV: now. Live records of the route.
pub(crate) const COUNT_ROUTE: &str = r"
return redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
";

/// KEYS: the route's user registry. ARGV: now, tag, handle. The user of the live session
/// with that handle in this route, or nil.
pub(crate) const FIND_HANDLE: &str = r"
local now = tonumber(ARGV[1])
for _, user in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, hex in ipairs(redis.call('ZRANGEBYSCORE', ARGV[2] .. ':u:' .. user, '(' .. ARGV[1], '+inf')) do
    local r = redis.call('HMGET', ARGV[2] .. ':s:' .. hex, 'h', 'mv', 'e')
    if r[1] == ARGV[3] and not r[2] and r[3] and tonumber(r[3]) > now then return user end
  end
end
return nil
";

/// KEYS: the route's set of records, its user registry. ARGV: now, tag. Destroys every
/// session of the route with its index entries; returns how many were live.
pub(crate) const DESTROY_ROUTE_ALL: &str = r"
local now = tonumber(ARGV[1])
local live_count = 0
for _, hex in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. ':s:' .. hex
  local r = redis.call('HMGET', key, 'mv', 'e')
  if r[2] and not r[1] then
    redis.call('DEL', key)
    if tonumber(r[2]) > now then live_count = live_count + 1 end
  end
end
for _, user in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  redis.call('DEL', ARGV[2] .. ':u:' .. user)
end
redis.call('DEL', KEYS[1], KEYS[2])
return live_count
";

/// KEYS: the route's set of records. ARGV: now. Entries expired and not yet pruned.
pub(crate) const COUNT_EXPIRED_ROUTE: &str = r"
return redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
";

/// KEYS: the route's user registry. ARGV: now, tag. Each user of the route and their live
/// sessions in it.
pub(crate) const USERS_ROUTE: &str = r"
local out = {}
for _, user in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local live = redis.call('ZCOUNT', ARGV[2] .. ':u:' .. user, '(' .. ARGV[1], '+inf')
  if live > 0 then
    table.insert(out, user)
    table.insert(out, live)
  end
end
return out
";

/// A script with the prelude.
pub(crate) fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}\n{body}"))
}
