package redisbroker

import "github.com/redis/go-redis/v9"

// The scripts of the broker on a Redis Cluster (Options.Cluster; rc.go and
// docs/DECISIONS.md 31). Each runs in one hash slot: a user's ({<user>}) or
// the broadcasts' ({all}). Order keys are Redis's clock of the master that
// ran the script, in microseconds, doubled: a broadcast's key is even
// (2t), a user event's odd (2t+1), and each stream's keys only grow (a key
// is at least the stream's last plus two). A stream's entry id is
// "<key>-0"; its meta hash holds t (the last key handed out, or a key a
// read reserved), z (keys at or below it are before the stream's known
// history: it was made then), f (the newest key deleted for the bounds),
// b (envelope bytes held) and k:<key> (the entry of a coalescing key).

// rcAppendLua defines append(), which appends one envelope to a stream and
// applies the bounds: at most maxlen entries, maxbytes of envelopes (0: no
// byte bound) and nothing older than minkey; a coalescing key first
// deletes the key's earlier entry (which does not move the floor). It
// returns the new floor, or nil when nothing was trimmed.
const rcAppendLua = `
local function append(stream, meta, key, frame, tsms, ckey, maxlen, maxbytes, minkey)
  local ks = string.format('%d', key)
  local size = string.len(frame)
  local bytes = tonumber(redis.call('HGET', meta, 'b') or '0')
  if ckey ~= '' then
    local prev = redis.call('HGET', meta, 'k:' .. ckey)
    if prev then
      local pk, ps = string.match(prev, '^(%d+):(%d+)$')
      if pk and redis.call('XDEL', stream, pk .. '-0') == 1 then
        bytes = bytes - tonumber(ps)
      end
    end
    redis.call('HSET', meta, 'k:' .. ckey, ks .. ':' .. size)
    redis.call('XADD', stream, ks .. '-0', 'f', frame, 't', tsms, 'k', ckey)
  else
    redis.call('XADD', stream, ks .. '-0', 'f', frame, 't', tsms)
  end
  bytes = bytes + size
  local len = redis.call('XLEN', stream)
  local floor = nil
  while true do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not head then
      break
    end
    local hks = string.match(head[1], '^(%d+)')
    local hk = tonumber(hks)
    if not (len > maxlen or (maxbytes > 0 and bytes > maxbytes) or hk < minkey) then
      break
    end
    local fields = head[2]
    local hc = nil
    for j = 1, #fields, 2 do
      if fields[j] == 'f' then
        bytes = bytes - string.len(fields[j + 1])
      elseif fields[j] == 'k' then
        hc = fields[j + 1]
      end
    end
    if hc then
      local cur = redis.call('HGET', meta, 'k:' .. hc)
      if cur and string.match(cur, '^(%d+)') == hks then
        redis.call('HDEL', meta, 'k:' .. hc)
      end
    end
    redis.call('XDEL', stream, head[1])
    len = len - 1
    floor = hk
  end
  if bytes < 0 then
    bytes = 0
  end
  redis.call('HSET', meta, 'b', string.format('%d', bytes))
  if floor then
    redis.call('HSET', meta, 'f', string.format('%d', floor))
  end
  return floor
end
`

// rcPublishHead is the start shared by both publish scripts: the marker
// check (a publish under the same idempotency key, or a lost answer being
// checked), the deadline, the clock and the event's key.
//
//	KEYS[1] meta hash  KEYS[2] stream  KEYS[last-1] marker  KEYS[last] channel
//	ARGV[1] id ("" for a broadcast: "b<key>")  ARGV[2] MAXLEN (0: no history)
//	ARGV[3] TTL ms (0: none)  ARGV[4] type  ARGV[5] payload
//	ARGV[6] timestamp as written  ARGV[7] timestamp ms  ARGV[8] deadline
//	(Redis clock, microseconds)  ARGV[9] marker TTL ms  ARGV[10] max bytes
//	ARGV[11] coalescing key  ARGV[12] "1": volatile  ARGV[13] parity (1:
//	a user's event, 0: a broadcast)  ARGV[14] the id index's bound
//	ARGV[15] the publish's signature (its users), kept in the marker: a
//	marker of another signature answers {"conflict", marker}
const rcPublishHead = `
local marker, ch = KEYS[#KEYS - 1], KEYS[#KEYS]
local done = redis.call('GET', marker)
if done then
  -- the same key for another publish (other users): refused
  if string.match(done, ';([^;]*)$') ~= ARGV[15] then
    return {'conflict', done}
  end
  return {'dup', done}
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
if now > tonumber(ARGV[8]) then
  return {'late'}
end
local meta, stream = KEYS[1], KEYS[2]
local parity = tonumber(ARGV[13])
local maxlen, ttl, maxbytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[10])
local ckey, volatile = ARGV[11], ARGV[12] == '1'
local last = tonumber(redis.call('HGET', meta, 't') or '0')
local key = math.max(2 * now + parity, last + 2)
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'z', string.format('%d', key - 1))
end
local ks = string.format('%d', key)
redis.call('HSET', meta, 't', ks)
local id = ARGV[1]
if id == '' then
  id = 'b' .. ks
end
local mid = ''
if ckey ~= '' then
  mid = ',"key":"' .. ckey .. '"'
elseif volatile then
  mid = ',"volatile":true'
end
local frame = '{"id":"' .. id .. '","type":"' .. ARGV[4] .. '"' .. mid .. ',"payload":' .. ARGV[5] .. ',"timestamp":"' .. ARGV[6] .. '"}'
local minkey = 0
if ttl > 0 then
  minkey = 2 * (now - ttl * 1000)
end
local floor = nil
if maxlen > 0 and not volatile then
  if redis.call('EXISTS', stream) == 0 then
    -- the stream expired (its meta hash may live on): nothing is held
    redis.call('HSET', meta, 'b', '0')
  end
  floor = append(stream, meta, key, frame, ARGV[7], ckey, maxlen, maxbytes, minkey)
end
`

// rcPublishUserScript publishes one event to one user: keys as
// rcPublishHead with KEYS[3] the id index (a sorted set of the ids of the
// user's events scored by their keys, so that an id shared by the
// recipients of one publish resolves to each one's key: superseded and
// volatile events keep theirs, trimmed with the stream's floor and TTL and
// at most ARGV[14] of them) and KEYS[4] the user's connection slots. The message on the channel is
// "e\n<now>\n<key>\n<id>\n<type>\n<ts ms>\n<frame>" (now: Redis's clock
// when the script ran, what lets a node order it with other masters'
// events). It returns {"ok"|"dup", "<id>;<live slots>;<signature>"},
// {"conflict", marker} or {"late"}.
var rcPublishUserScript = redis.NewScript(rcAppendLua + rcPublishHead + `
local index = KEYS[3]
if maxlen > 0 then
  redis.call('ZADD', index, ks, id)
  if floor then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. string.format('%d', floor))
  end
  if minkey > 0 then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. string.format('%d', minkey))
  end
  -- keyed and volatile events add ids without entries: past the index's
  -- own bound the oldest ids go, and the floor rises to the newest of them
  -- (a resume from before it is no longer provable)
  local over = redis.call('ZCARD', index) - tonumber(ARGV[14])
  if over > 0 then
    local gone = redis.call('ZRANGE', index, over - 1, over - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', index, 0, over - 1)
    local f = tonumber(redis.call('HGET', meta, 'f') or '0')
    if gone[2] and tonumber(gone[2]) > f then
      redis.call('HSET', meta, 'f', gone[2])
    end
  end
end
if ttl > 0 then
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', index, ttl)
elseif maxlen == 0 then
  redis.call('PEXPIRE', meta, 600000)
end
redis.call('SPUBLISH', ch, 'e\n' .. string.format('%d', now) .. '\n' .. ks .. '\n' .. id .. '\n' .. ARGV[4] .. '\n' .. ARGV[7] .. '\n' .. frame)
local devices = redis.call('ZCOUNT', KEYS[4], '(' .. string.format('%d', math.floor(now / 1000)), '+inf')
local answer = id .. ';' .. devices .. ';' .. ARGV[15]
redis.call('SET', marker, answer, 'PX', ARGV[9])
return {'ok', answer}
`)

// rcPublishAllScript publishes one broadcast: keys as rcPublishHead with
// KEYS[3] the cluster's connection slots (what it counts). The broadcast
// meta hash does not expire.
var rcPublishAllScript = redis.NewScript(rcAppendLua + rcPublishHead + `
if ttl > 0 and maxlen > 0 then
  redis.call('PEXPIRE', stream, ttl)
end
redis.call('SPUBLISH', ch, 'e\n' .. string.format('%d', now) .. '\n' .. ks .. '\n' .. id .. '\n' .. ARGV[4] .. '\n' .. ARGV[7] .. '\n' .. frame)
local devices = redis.call('ZCOUNT', KEYS[3], '(' .. string.format('%d', math.floor(now / 1000)), '+inf')
local answer = id .. ';' .. devices .. ';' .. ARGV[15]
redis.call('SET', marker, answer, 'PX', ARGV[9])
return {'ok', answer}
`)

// rcReadUserScript reserves a place in the user's order and reads the
// user's own events after a resume point. It raises the meta hash's t to
// cap = max(t, 2*now+1), so that every later event of the user has a key
// above cap and every earlier one is at or below it, and returns cap.
//
//	KEYS[1] meta hash  KEYS[2] stream  KEYS[3] id index
//	ARGV[1] "" (fresh: only cap), "o" (from an id: ARGV[2] is looked up in
//	the index) or "k" (from a key: ARGV[2])  ARGV[3] COUNT  ARGV[4] TTL ms
//
// A point ahead of cap (a broadcast's key from a master whose clock runs
// ahead of this one's) raises cap to it, when it is at most a second
// ahead: further ahead it is no key this cluster made, and reserving it
// would hold the user's next events back until the clocks reach it.
//
// It returns {cap} for a fresh start, {cap, 0} when the history cannot
// prove that it holds everything after the point (the stream was made
// after it, trimmed past it, the point is older than the TTL, unknown or
// too far ahead) and {cap, 1, key, entries} otherwise.
var rcReadUserScript = redis.NewScript(`
local meta = KEYS[1]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local ttl = tonumber(ARGV[4])
local existed = redis.call('EXISTS', meta) == 1
local k = nil
if ARGV[1] == 'o' then
  k = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[2]))
elseif ARGV[1] == 'k' then
  k = tonumber(ARGV[2])
end
local last = tonumber(redis.call('HGET', meta, 't') or '0')
local cap = math.max(last, 2 * now + 1)
-- a point ahead of this master's clock (another master's clock runs
-- ahead) is reserved too, up to one second ahead; further is no id of ours
if k and k > cap and k <= 2 * (now + 1000000) + 1 then
  cap = k + 1 - (k % 2)
end
local caps = string.format('%d', cap)
redis.call('HSET', meta, 't', caps)
if not existed then
  redis.call('HSET', meta, 'z', caps)
end
if ttl > 0 then
  redis.call('PEXPIRE', meta, ttl)
end
if ARGV[1] == '' then
  return {caps}
end
if not existed or not k then
  return {caps, 0}
end
local z = tonumber(redis.call('HGET', meta, 'z') or caps)
local f = tonumber(redis.call('HGET', meta, 'f') or '0')
if k < z or k < f or k > cap or (ttl > 0 and k < 2 * (now - ttl * 1000)) then
  return {caps, 0}
end
local ks = string.format('%d', k)
return {caps, 1, ks, redis.call('XRANGE', KEYS[2], '(' .. ks .. '-0', '+', 'COUNT', ARGV[3])}
`)

// rcReadAllScript raises the broadcasts' t above a user's cap (so that
// every later broadcast is after the user's reserved place) and reads the
// broadcasts after a key up to the cap.
//
//	KEYS[1] broadcast meta hash  KEYS[2] broadcast stream
//	ARGV[1] the key to read after ("": none, only raise)  ARGV[2] cap (odd)
//	ARGV[3] COUNT  ARGV[4] TTL ms
//
// It returns {1} after a raise only, {0} when the broadcast history cannot
// prove that it holds everything after the key, {1, entries} otherwise.
var rcReadAllScript = redis.NewScript(`
local meta = KEYS[1]
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local ttl = tonumber(ARGV[4])
local cap = tonumber(ARGV[2])
local existed = redis.call('EXISTS', meta) == 1
local last = tonumber(redis.call('HGET', meta, 't') or '0')
local t = math.max(last, 2 * now, cap + 1)
local ts = string.format('%d', t)
redis.call('HSET', meta, 't', ts)
if not existed then
  redis.call('HSET', meta, 'z', ts)
end
if ARGV[1] == '' then
  return {1}
end
local k = tonumber(ARGV[1])
local z = tonumber(redis.call('HGET', meta, 'z') or ts)
local f = tonumber(redis.call('HGET', meta, 'f') or '0')
if not existed or k < z or k < f or (ttl > 0 and k < 2 * (now - ttl * 1000)) then
  return {0}
end
return {1, redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', ARGV[2] .. '-0', 'COUNT', ARGV[3])}
`)

// rcTickScript publishes Redis's clock (microseconds) on a node's tick
// channel of one master (KEYS[1], in a slot that master serves): once it
// arrives, every event that master published earlier has arrived too, and
// every later one has a greater key (rc.go, the merge).
var rcTickScript = redis.NewScript(`
local tm = redis.call('TIME')
redis.call('SPUBLISH', KEYS[1], 't\n' .. tm[1] .. string.format('%06d', tonumber(tm[2])))
return 1
`)

// rcAcquireScript is acquireScript for one user's slot set only (the
// cluster's set is in another slot); it also returns Redis's clock in
// milliseconds, which scores the connection in the cluster's set.
//
//	KEYS[1] the user's slot set
//	ARGV[1] member  ARGV[2] limit (0: none)  ARGV[3] slot lifetime ms
//
// It returns {1, now} when the slot is held, {0, now} at the limit.
var rcAcquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
  return {0, now}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, now}
`)
