"""The one cap script: every cap operation of one buyer, atomically, on one Cluster slot.

KEYS[1] reservations hash · KEYS[2] prepaid balance (cents) · KEYS[3] outbox stream ·
KEYS[4..] the period counters (leads, or cents for budgets). All carry the buyer's hash tag.
"""

CAP_SCRIPT = """
local op = ARGV[1]
local id = ARGV[2]
local n = #KEYS - 3
if op == 'reserve' then
  -- ARGV[3] record · ARGV[4] cents · ARGV[5] prepaid · ARGV[6] balance floor ·
  -- then per counter i: limit ARGV[3i+4], add ARGV[3i+5], ttl ARGV[3i+6]
  local values = {}
  local full = 0
  for i = 1, n do
    local v = tonumber(redis.call('GET', KEYS[3 + i]) or '0')
    values[i] = v
    if full == 0 and v + tonumber(ARGV[3 * i + 5]) > tonumber(ARGV[3 * i + 4]) then full = i end
  end
  local bal = tonumber(redis.call('GET', KEYS[2]) or '0')
  if full == 0 and ARGV[5] == '1' and bal - tonumber(ARGV[4]) < tonumber(ARGV[6]) then full = -1 end
  if full ~= 0 then return {0, full, bal, unpack(values)} end
  for i = 1, n do
    values[i] = redis.call('INCRBY', KEYS[3 + i], ARGV[3 * i + 5])
    redis.call('EXPIRE', KEYS[3 + i], ARGV[3 * i + 6])
  end
  if ARGV[5] == '1' then bal = redis.call('DECRBY', KEYS[2], ARGV[4]) end
  redis.call('HSET', KEYS[1], id, ARGV[3])
  return {1, 0, bal, unpack(values)}
elseif op == 'commit' then
  -- ARGV[3] outbox flag · ARGV[4] outbox record: the sale and its ledger record, one atomic step.
  -- ARGV[5] cents the stated price differs from the reserved one, ARGV[6] '1': prepaid;
  -- KEYS[4..] the budget counters it moves (an expired period is not brought back).
  local had = redis.call('HDEL', KEYS[1], id)
  if ARGV[3] == '1' then redis.call('XADD', KEYS[3], '*', 'record', ARGV[4]) end
  local delta = tonumber(ARGV[5] or '0')
  if had == 1 and delta ~= 0 then
    for i = 1, n do
      if redis.call('EXISTS', KEYS[3 + i]) == 1 then
        if redis.call('INCRBY', KEYS[3 + i], delta) < 0 then
          redis.call('SET', KEYS[3 + i], '0', 'KEEPTTL')
        end
      end
    end
    if ARGV[6] == '1' then redis.call('DECRBY', KEYS[2], delta) end
  end
  return had
elseif op == 'release' then
  -- ARGV[3] cents back to the balance ('' when not prepaid) · ARGV[3+i] amount off counter i
  if redis.call('HDEL', KEYS[1], id) == 0 then return 0 end
  for i = 1, n do
    -- A counter whose period already expired is not brought back to life.
    if redis.call('EXISTS', KEYS[3 + i]) == 1 then
      if redis.call('DECRBY', KEYS[3 + i], ARGV[3 + i]) < 0 then
        redis.call('SET', KEYS[3 + i], '0', 'KEEPTTL')
      end
    end
  end
  if ARGV[3] ~= '' then redis.call('INCRBY', KEYS[2], ARGV[3]) end
  return 1
elseif op == 'mark' then
  -- ARGV[3] the record, now saying 'unsettled' and why
  if redis.call('HEXISTS', KEYS[1], id) == 0 then return 0 end
  redis.call('HSET', KEYS[1], id, ARGV[3])
  return 1
end
return redis.error_reply('unknown cap operation ' .. tostring(op))
"""
