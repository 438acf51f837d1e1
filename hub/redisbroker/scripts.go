package redisbroker

import "github.com/redis/go-redis/v9"

// horizonLua defines horizon(), which scripts that need it call at most
// once (it memoises): an upper bound of the highest seq that was published
// HistoryTTL or more ago, so of every event of a stream that may have
// expired since (a stream expires HistoryTTL after its last write). It is
// read from the checkpoint stream: the oldest checkpoint younger than the
// TTL names a seq published after now-TTL, so everything older is below
// it; without one, nothing is known to be younger than the TTL and the
// bound is the current seq. With no TTL nothing expires: 0.
//
// It expects ttl (milliseconds), nowms (Redis's clock), the checkpoint
// stream's name ckkey and the meta hash's metakey.
const horizonLua = `
local hz = nil
local function horizon()
  if hz then return hz end
  hz = 0
  if ttl > 0 then
    hz = tonumber(redis.call('HGET', metakey, 'seq') or '0')
    local c = redis.call('XRANGE', ckkey, string.format('%d', nowms - ttl + 1), '+', 'COUNT', 1)[1]
    if c then
      local f = c[2]
      for j = 1, #f, 2 do
        if f[j] == 's' then hz = tonumber(f[j + 1]) - 1 end
      end
    end
  end
  return hz
end
`

// publishScript gives one event one id, appends it to each target's
// stream and publishes it on each target's channel, atomically, and counts
// each target's live connection slots. Keys are derived inside the script
// because the streams of an epoch are named after it, and the epoch is read
// (or made) here.
//
// It publishes nothing when the marker (KEYS[2]) exists: a call with the
// same idempotency key published already, and its answer is returned. It
// publishes nothing either when Redis's clock is past the deadline: the
// node that sent it has given up waiting, and may have answered that
// nothing was published (see publish.go). Otherwise it publishes and sets
// the marker to the answer, so that the node can find out what happened
// when the answer is lost.
//
// Each stream has a hash next to it (the state key) with its byte count
// (b), its floor (f: the seq of the newest entry deleted for the bounds,
// which no resume may need), the horizon when it was made (z: what an
// earlier stream of the same name may have held is below it), and, for
// each coalescing key, the seq and size of the key's entry (k:<key> ->
// "<seq>:<size>"). A keyed event first deletes the entry of its key (XDEL,
// O(1)) and takes its place in the hash: the floor does not move, and the
// bounds count one entry per key. Each stream is bounded by MAXLEN entries
// and by max bytes of envelopes: the oldest entries are deleted while it
// is over either bound, moving the floor. An envelope bigger than the byte
// bound is deleted at once. A volatile event is published and counted,
// never stored.
//
// Every publish also keeps the checkpoint stream (one entry "s" = seq per
// granularity, Redis's time as the entry id, trimmed to the TTL) that
// horizon() reads.
//
//	KEYS[1]  meta hash (fields epoch, seq; ck: time of the last checkpoint)
//	KEYS[2]  marker
//	ARGV[1]  candidate epoch (used when the meta hash is missing)
//	ARGV[2]  MAXLEN (0: no history, publish only)
//	ARGV[3]  stream TTL in milliseconds (0: none)
//	ARGV[4]  type
//	ARGV[5]  payload (compact JSON)
//	ARGV[6]  timestamp as the envelope writes it
//	ARGV[7]  timestamp in Unix milliseconds
//	ARGV[8]  deadline, Redis's clock in Unix microseconds
//	ARGV[9]  marker TTL in milliseconds
//	ARGV[10] max bytes of envelopes per stream (0: no byte bound)
//	ARGV[11] coalescing key ("" for none)
//	ARGV[12] "1" for a volatile event
//	ARGV[13] checkpoint stream prefix (the epoch is appended)
//	ARGV[14] checkpoint granularity in milliseconds
//	ARGV[15] number of targets n
//	ARGV[16+4(i-1)..19+4(i-1)]  target i: stream key prefix and state key
//	         prefix (the epoch is appended to both), channel, slot set
//
// It returns {"ok", answer} (published), {"dup", answer} (published before
// under the same marker) or {"late"} (nothing published); answer is
// "<id>;<count>,<count>,..." with the live slots of each target's slot set
// in order.
var publishScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local done = redis.call('GET', KEYS[2])
if done then
  return {'dup', done}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now > tonumber(ARGV[8]) then
  return {'late'}
end
local nowms = math.floor(now / 1000)
local nowmss = string.format('%d', nowms)
local metakey = KEYS[1]
local epoch = redis.call('HGET', metakey, 'epoch')
if not epoch then
  redis.call('HSET', metakey, 'epoch', ARGV[1], 'seq', 0)
  epoch = ARGV[1]
end
local maxlen = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local maxbytes = tonumber(ARGV[10])
local ckey = ARGV[11]
local volatile = ARGV[12] == '1'
local ckkey = ARGV[13] .. epoch
local gran = tonumber(ARGV[14])
local n = tonumber(ARGV[15])
local seq = string.format('%d', redis.call('HINCRBY', metakey, 'seq', 1))
local id = epoch .. '-' .. seq
local mid = ''
if ckey ~= '' then
  mid = ',"key":"' .. ckey .. '"'
elseif volatile then
  mid = ',"volatile":true'
end
local frame = '{"id":"' .. id .. '","type":"' .. ARGV[4] .. '"' .. mid .. ',"payload":' .. ARGV[5] .. ',"timestamp":"' .. ARGV[6] .. '"}'
local size = string.len(frame)
local msg = id .. '\n' .. ARGV[4] .. '\n' .. ARGV[7] .. '\n' .. frame
` + horizonLua + `
if maxlen > 0 and ttl > 0 then
  local last = tonumber(redis.call('HGET', metakey, 'ck') or '0')
  if nowms - last >= gran then
    redis.call('XADD', ckkey, 'MINID', '~', string.format('%d', nowms - ttl - gran), '*', 's', seq)
    redis.call('PEXPIRE', ckkey, ttl + gran)
    redis.call('HSET', metakey, 'ck', nowmss)
  end
end
local devices = {}
for i = 1, n do
  local a = 15 + 4 * (i - 1)
  if maxlen > 0 and not volatile then
    local key = ARGV[a + 1] .. epoch
    local skey = ARGV[a + 2] .. epoch
    if redis.call('EXISTS', skey) == 0 then
      redis.call('HSET', skey, 'z', string.format('%d', horizon()))
    end
    local bytes = tonumber(redis.call('HGET', skey, 'b') or '0')
    if ckey ~= '' then
      local prev = redis.call('HGET', skey, 'k:' .. ckey)
      if prev then
        local pseq, psize = string.match(prev, '^(%d+):(%d+)$')
        if pseq and redis.call('XDEL', key, pseq .. '-0') == 1 then
          bytes = bytes - tonumber(psize)
        end
      end
      redis.call('HSET', skey, 'k:' .. ckey, seq .. ':' .. size)
      redis.call('XADD', key, seq .. '-0', 'f', frame, 't', ARGV[7], 'k', ckey)
    else
      redis.call('XADD', key, seq .. '-0', 'f', frame, 't', ARGV[7])
    end
    bytes = bytes + size
    local len = redis.call('XLEN', key)
    local floor = nil
    while len > maxlen or (maxbytes > 0 and bytes > maxbytes) do
      local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
      if not head then
        break
      end
      local hseq = string.match(head[1], '^(%d+)')
      local fields = head[2]
      local hk = nil
      for j = 1, #fields, 2 do
        if fields[j] == 'f' then
          bytes = bytes - string.len(fields[j + 1])
        elseif fields[j] == 'k' then
          hk = fields[j + 1]
        end
      end
      if hk then
        local cur = redis.call('HGET', skey, 'k:' .. hk)
        if cur and string.match(cur, '^(%d+)') == hseq then
          redis.call('HDEL', skey, 'k:' .. hk)
        end
      end
      redis.call('XDEL', key, head[1])
      len = len - 1
      floor = hseq
    end
    if bytes < 0 then
      bytes = 0
    end
    redis.call('HSET', skey, 'b', string.format('%d', bytes))
    if floor then -- the head's seq only grows: the floor with it
      redis.call('HSET', skey, 'f', floor)
    end
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
      redis.call('PEXPIRE', skey, ttl)
    end
  end
  redis.call('SPUBLISH', ARGV[a + 3], msg)
  devices[i] = redis.call('ZCOUNT', ARGV[a + 4], '(' .. nowmss, '+inf')
end
local answer = id .. ';' .. table.concat(devices, ',')
redis.call('SET', KEYS[2], answer, 'PX', ARGV[9])
return {'ok', answer}
`)

// historyScript reads, atomically, what History and Since need from the
// user's stream and the broadcast stream of one epoch.
//
//	KEYS[1]  meta hash
//	KEYS[2]  user stream, KEYS[3] its state hash
//	KEYS[4]  broadcast stream, KEYS[5] its state hash
//	KEYS[6]  checkpoint stream
//	ARGV[1]  epoch of the id
//	ARGV[2]  last seq
//	ARGV[3]  COUNT for each stream
//	ARGV[4]  stream TTL in milliseconds (0: none)
//
// It returns {0} when the epoch is not the current one or the seq is ahead
// of the epoch's (an id from the future proves nothing), otherwise
// {1, s1, s2} where each s is {floor, heldMillis, entries}: floor is the
// highest seq the stream may have lost (its state's floor or horizon when
// it was made, whichever is higher; horizon() now when it has no state),
// heldMillis the t field of the entry with the last seq (empty when not in
// this stream), entries the XRANGE result after the last seq.
var historyScript = redis.NewScript(`
local metakey = KEYS[1]
local ep = redis.call('HGET', metakey, 'epoch')
if ep ~= ARGV[1] or tonumber(ARGV[2]) > tonumber(redis.call('HGET', metakey, 'seq') or '0') then
  return {0}
end
local t = redis.call('TIME')
local nowms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local ckkey = KEYS[6]
` + horizonLua + `
local out = {1}
for k = 0, 1 do
  local key, skey = KEYS[2 + 2 * k], KEYS[3 + 2 * k]
  local res = {'0', '', {}}
  if redis.call('EXISTS', skey) == 1 then
    local f = tonumber(redis.call('HGET', skey, 'f') or '0')
    local z = tonumber(redis.call('HGET', skey, 'z') or '0')
    res[1] = string.format('%d', math.max(f, z))
  else
    res[1] = string.format('%d', horizon())
  end
  local held = redis.call('XRANGE', key, ARGV[2] .. '-0', ARGV[2] .. '-0')
  if #held == 1 then
    local fields = held[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 't' then res[2] = fields[i + 1] end
    end
  end
  res[3] = redis.call('XRANGE', key, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
  out[2 + k] = res
end
return out
`)

// positionScript returns the cluster's position {epoch, seq}, making the
// epoch when the meta hash is missing (as publishScript would).
//
//	KEYS[1]  meta hash
//	ARGV[1]  candidate epoch
var positionScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
  return {ARGV[1], '0'}
end
return {epoch, redis.call('HGET', KEYS[1], 'seq') or '0'}
`)

// acquireScript takes a connection slot of one user. The slots are a sorted
// set of members scored by their expiry (Redis time, milliseconds), a
// member describing its connection (see slots.go); expired ones are
// dropped first. The cluster's slot set holds the connection ids of every
// user's slots, scored the same way, for a broadcast to count. A
// connection that holds a slot already (a retried call) keeps it.
//
//	KEYS[1]  the user's slot set
//	KEYS[2]  the cluster's slot set
//	ARGV[1]  member
//	ARGV[2]  limit (0: none)
//	ARGV[3]  slot lifetime in milliseconds
//	ARGV[4]  connection id
//
// It returns 1 when the slot is held, 0 when the limit is reached.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
`)

// refreshScript renews the slots a node holds (adding back any that were
// lost, so that the sets stay true to the live connections).
//
//	KEYS[1]    the cluster's slot set
//	KEYS[1+i]  a user's slot set
//	ARGV[1]    slot lifetime in milliseconds
//	ARGV[1+i]  the member held in KEYS[1+i]; its connection id (up to the
//	           first newline) is renewed in KEYS[1]
var refreshScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], ttl)
  redis.call('ZADD', KEYS[1], now + ttl, string.match(ARGV[i], '^[^\n]+'))
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #KEYS - 1
`)

// connsScript lists the live members of a user's slot set.
//
//	KEYS[1]  the user's slot set
var connsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
`)
