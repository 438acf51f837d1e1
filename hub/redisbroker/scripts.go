package redisbroker

import "github.com/redis/go-redis/v9"

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
// Each stream is bounded by MAXLEN events and by max bytes of envelopes: a
// counter next to it (the bytes key) holds the envelope bytes it holds, and
// the oldest entries are deleted (XDEL, which moves the stream's
// max-deleted-entry-id, read by historyScript) while it is over either
// bound. An envelope bigger than the byte bound is deleted at once.
//
//	KEYS[1]  meta hash (fields epoch, seq)
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
//	ARGV[11] number of targets n
//	ARGV[12+4(i-1)..15+4(i-1)]  target i: stream key prefix and bytes key
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
local nowms = string.format('%d', math.floor(now / 1000))
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
  epoch = ARGV[1]
end
local maxlen = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local maxbytes = tonumber(ARGV[10])
local n = tonumber(ARGV[11])
local seq = string.format('%d', redis.call('HINCRBY', KEYS[1], 'seq', 1))
local id = epoch .. '-' .. seq
local frame = '{"id":"' .. id .. '","type":"' .. ARGV[4] .. '","payload":' .. ARGV[5] .. ',"timestamp":"' .. ARGV[6] .. '"}'
local size = string.len(frame)
local msg = id .. '\n' .. ARGV[4] .. '\n' .. ARGV[7] .. '\n' .. frame
local devices = {}
for i = 1, n do
  local a = 11 + 4 * (i - 1)
  if maxlen > 0 then
    local key = ARGV[a + 1] .. epoch
    local bkey = ARGV[a + 2] .. epoch
    redis.call('XADD', key, seq .. '-0', 'f', frame, 't', ARGV[7])
    local bytes = redis.call('INCRBY', bkey, size)
    local len = redis.call('XLEN', key)
    local trimmed = false
    while len > maxlen or (maxbytes > 0 and bytes > maxbytes) do
      local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
      if not head then
        break
      end
      local fields = head[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'f' then
          bytes = bytes - string.len(fields[j + 1])
        end
      end
      redis.call('XDEL', key, head[1])
      len = len - 1
      trimmed = true
    end
    if trimmed then
      if bytes < 0 then
        bytes = 0
      end
      redis.call('SET', bkey, string.format('%d', bytes))
    end
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
      redis.call('PEXPIRE', bkey, ttl)
    end
  end
  redis.call('PUBLISH', ARGV[a + 3], msg)
  devices[i] = redis.call('ZCOUNT', ARGV[a + 4], '(' .. nowms, '+inf')
end
local answer = id .. ';' .. table.concat(devices, ',')
redis.call('SET', KEYS[2], answer, 'PX', ARGV[9])
return {'ok', answer}
`)

// historyScript reads, atomically, what History needs from the user's
// stream and the broadcast stream of one epoch.
//
//	KEYS[1]  meta hash
//	KEYS[2]  user stream, KEYS[3] broadcast stream
//	ARGV[1]  epoch of the id
//	ARGV[2]  last seq
//	ARGV[3]  COUNT for each stream
//
// It returns {0} when the epoch is not the current one, otherwise
// {1, s2, s3} where each s is {trimmed, firstSeq, heldMillis, entries,
// deletedSeq}: trimmed is 1 when entries were removed from the stream's
// head, firstSeq the seq of its first entry ("0" when empty or missing),
// heldMillis the t field of the entry with the last seq (empty when not in
// this stream), entries the XRANGE result after the last seq, and
// deletedSeq the seq of the stream's max-deleted-entry-id (the newest entry
// publishScript deleted for its bounds; "0" when none).
var historyScript = redis.NewScript(`
local ep = redis.call('HGET', KEYS[1], 'epoch')
if ep ~= ARGV[1] then
  return {0}
end
local out = {1}
for k = 2, 3 do
  local key = KEYS[k]
  local res = {0, '0', '', {}, '0'}
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    local length, added, first = 0, 0, nil
    for i = 1, #info, 2 do
      local f = info[i]
      if f == 'length' then length = info[i + 1]
      elseif f == 'entries-added' then added = info[i + 1]
      elseif f == 'first-entry' then first = info[i + 1]
      elseif f == 'max-deleted-entry-id' then res[5] = string.match(info[i + 1], '^(%d+)') or '0'
      end
    end
    if added > length then
      res[1] = 1
    end
    if type(first) == 'table' and first[1] then
      res[2] = string.match(first[1], '^(%d+)')
    end
    local held = redis.call('XRANGE', key, ARGV[2] .. '-0', ARGV[2] .. '-0')
    if #held == 1 then
      local fields = held[1][2]
      for i = 1, #fields, 2 do
        if fields[i] == 't' then res[3] = fields[i + 1] end
      end
    end
    res[4] = redis.call('XRANGE', key, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
  end
  out[k] = res
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
