-- Debits a cost known after a request from the quotas and credits of one
-- call's limits, atomically and without an admission check, and answers
-- the state of every limit. It follows nlimits, window.lua and legacy.lua
-- (internal/storage).
--
-- KEYS[i]: the state key of limit i, as for limit.lua.
-- KEYS[n+1], optional: the subject's legacy key (see legacy.lua).
-- ARGV[1]: the amount, an integer between -(10^14-1) and 10^14-1; a
--   negative amount refunds, 0 only reads.
-- ARGV[2]: how long the state of credits never refilled is kept after
--   their last spend, in milliseconds.
-- ARGV[2i+1], ARGV[2i+2]: limit i, as for limit.lua.
--
-- A quota or credits takes the amount: what it used in its current window
-- becomes used + amount, never below 0 (a refund gives back at most what
-- was used) and at most 2^52, so that it may exceed the count (a debt),
-- and is written with the expiry Allow gives it. Credits whose key is
-- missing start from what legacy.lua carries. A rate is read, never
-- written.
--
-- Returns {1, index, remaining, reset, 0} for the tightest limit (1-based
-- index: the fewest remaining, then the longest reset; reset in
-- microseconds), followed by remaining, reset and 0 of every limit in
-- order. A quota's or credits' remaining is its count minus what it used,
-- below zero for a debt.
local floor, match, format = math.floor, string.match, string.format
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local amount = tonumber(ARGV[1])
local maxUsed = 4503599627370496 -- 2^52
local n = (#ARGV - 2) / 2

local reply = {1, 0, 0, 0, 0}
local best, brem, breset = 0, 0, 0
for i = 1, n do
  local a, b = tonumber(ARGV[2 * i + 1]), ARGV[2 * i + 2]
  local raw = redis.call('GET', KEYS[i])
  local s1, s2 = match(raw or '', '^(%d+):(%d+)$')
  local rem, reset
  if a > 0 then
    -- A rate as it stands, as limit.lua reads it (a clock that stepped
    -- back included), without writing it.
    b = tonumber(b)
    local tau = a * b
    local tat = now
    if s1 then
      local st, seen = tonumber(s1), tonumber(s2)
      if now < seen then
        local debt = st - seen
        if debt < 0 then debt = 0 end
        tat = now + debt
      elseif st > now then
        tat = st
      end
    end
    if tat > now + tau then tat = now + tau end
    reset = tat - now
    rem = floor((tau - reset) / a)
    if rem < 0 then rem = 0 elseif rem > b then rem = b end
  else
    local ws, we = window(sec, b)
    local used = 0
    if s1 and tonumber(s1) == we then
      used = tonumber(s2)
    elseif not raw then
      local c = carried(KEYS[i], we, -a)
      -- Written even at 0, so that the legacy key is read once.
      if c then used, s1 = c, true end
    end
    used = used + amount
    if used < 0 then used = 0 elseif used > maxUsed then used = maxUsed end
    rem = -a - used
    reset = we * 1000000 - now
    if we == 0 then reset = 0 end
    if amount ~= 0 and (s1 or used > 0) then
      local ttl
      if we == 0 then ttl = ARGV[2] else ttl = floor((reset + 999) / 1000) end
      redis.call('SET', KEYS[i], format('%.0f:%.0f', we, used), 'PX', ttl)
    end
  end
  local tighter = i == 1 or rem < brem or (rem == brem and reset > breset)
  if tighter then best, brem, breset = i, rem, reset end
  reply[3 * i + 3], reply[3 * i + 4], reply[3 * i + 5] = rem, reset, 0
end
reply[2], reply[3], reply[4] = best, brem, breset
return reply
