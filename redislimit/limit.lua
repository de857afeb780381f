-- Decides all limits of one call for one subject, atomically; or, as Peek,
-- answers what a call of cost 1 would get, writing nothing.
--
-- The caller prepends "local peek = false" (Allow) or "local peek = true"
-- (Peek), then nlimits, window.lua and legacy.lua (internal/storage), to
-- this source.
-- KEYS[i]: the state key of limit i (see the package documentation); all
--   keys of a call share the subject's hash tag, so they are in one slot.
-- KEYS[n+1], optional: the subject's legacy key (see legacy.lua).
-- ARGV[1]: cost (>= 1).
-- ARGV[2]: how long the state of credits never refilled is kept after
--   their last spend, in milliseconds.
-- ARGV[2i+1], ARGV[2i+2]: limit i, as a and b:
--   rate:  a = emission interval T in microseconds (> 0), b = burst B;
--   quota or credits: a = minus the count N (< 0), b = window (0 never,
--          for credits never refilled; 1 minute, 2 hour, 3 day, 4 month).
--
-- Each key holds the state of one limit, two integers in decimal:
--   rate:  "<tat>:<seen>", the theoretical arrival time and the time of
--          the call that wrote it, in Unix microseconds. The key expires
--          at the TAT, when the rate is whole again.
--   quota or credits: "<window end in Unix seconds>:<used>". The key
--          expires at the end of the window. Credits never refilled have
--          window end 0, and their key expires ARGV[2] ms after the last
--          spend.
-- A missing key, or a value of another shape, is no state; except that
-- the missing key of credits starts from what legacy.lua carries, and
-- Allow writes it even when it denies, so that the legacy key is read
-- once. The script reads and writes only the keys of the call (and reads
-- the legacy key on such a miss): its cost does not depend on what else
-- the subject holds.
--
-- Returns {allowed, index, remaining, reset, retry} for the tightest limit
-- (1-based index; reset and retry in microseconds), followed by remaining,
-- reset and retry of every limit in order: when denied, the denying limit
-- with the longest retry; when allowed, the limit with the fewest
-- remaining, then the longest reset. Nothing is written unless every
-- limit allows, except a rate whose state moved to a clock that stepped
-- back (see below) and credits started from the legacy key, each written
-- as it stands, without this call's cost.
--
-- The time is Redis's TIME; Redis 5 and later replicate a script's effects,
-- so reading it before writing is allowed. Numbers are Lua doubles holding
-- integers below 2^53 (the caller keeps B*T below 2^50 and N below 10^14),
-- so the arithmetic is exact. Lua's own number-to-string conversion keeps
-- only 14 significant digits, so values are formatted with "%.0f", exact
-- for any such integer (not "%d", which goes through a C long, 32 bits on
-- some platforms), and expiries reach Redis as numbers (Redis formats
-- numbers with 17 significant digits).
local floor, match, format = math.floor, string.match, string.format
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local cost = 1
if ARGV[1] ~= '1' then cost = tonumber(ARGV[1]) end
local n = (#ARGV - 2) / 2

-- The reply: allowed, best, remaining, reset, retry of the tightest limit
-- (filled in at the end), then remaining, reset, retry of each limit.
local reply = {0, 0, 0, 0, 0}
local spent = {} -- per limit: what allowing cost it (a rate's interval, 0 for a count), or -1 when it denies
local vals, ttls = {}, {} -- per limit: the value to write and its expiry in milliseconds
local keep = {} -- per limit: a value and expiry to write even when the call is denied
local keeps = false

local allowed, best, bok, brem, breset, bretry = 1, 0, 1, 0, 0, 0
for i = 1, n do
  local a, b = tonumber(ARGV[2 * i + 1]), ARGV[2 * i + 2]
  local raw = redis.call('GET', KEYS[i])
  local s1, s2 = match(raw or '', '^(%d+):(%d+)$')
  local ok, rem, reset, retry = 0, 0, 0, 0
  if a > 0 then
    -- GCRA: allowed when max(TAT, now) + cost*T - now <= B*T.
    b = tonumber(b)
    local tau = a * b
    local tat, moved = now, false
    if s1 then
      local st, seen = tonumber(s1), tonumber(s2)
      if now < seen then
        -- Redis's clock stepped back since the state was written: no time
        -- has passed since, so what was outstanding then is outstanding
        -- now. The step neither locks the subject out nor grants more
        -- than the burst.
        local debt = st - seen
        if debt < 0 then debt = 0 end
        tat, moved = now + debt, true
      elseif st > now then
        tat = st
      end
    end
    -- A TAT beyond the burst window (written for a larger burst) counts
    -- as now + B*T.
    if tat > now + tau then tat, moved = now + tau, true end
    local d = tat - now
    rem = floor((tau - d) / a)
    if cost > b then
      -- Can never fit: wait until full, at least one interval.
      reset = d
      if reset < a then reset = a end
      retry = reset
    else
      local nt = tat + cost * a
      if nt - now > tau then
        reset = d
        retry = nt - now - tau
      else
        ok = 1
        reset = nt - now
        rem = floor((tau - reset) / a)
        vals[i], ttls[i] = format('%.0f:%.0f', nt, now), floor((reset + 999) / 1000)
      end
    end
    if rem < 0 then rem = 0 elseif rem > b then rem = b end
    if ok == 0 and moved and d > 0 then
      -- Nothing is spent, but the state moves to the new clock, so that
      -- time counts again from now.
      keep[i], keeps = {format('%.0f:%.0f', tat, now), floor((d + 999) / 1000)}, true
    end
  else
    local ws, we = window(sec, b)
    local used = 0
    if s1 and tonumber(s1) == we then
      used = tonumber(s2)
    else
      s1 = nil
    end
    rem = -a - used
    reset = we * 1000000 - now
    if we == 0 then reset = 0 end
    local ttl
    if we == 0 then ttl = ARGV[2] else ttl = floor((reset + 999) / 1000) end
    if not raw then
      local c = carried(KEYS[i], we, -a)
      if c then
        used, rem = c, -a - c
        keep[i], keeps = {format('%.0f:%.0f', we, c), ttl}, true
      end
    end
    if rem < 0 then rem = 0 end
    if cost > rem then
      retry = reset
    else
      ok = 1
      rem = rem - cost
      -- The stored window end is reused: formatting numbers is the
      -- costliest step here.
      if s1 then
        vals[i] = s1 .. ':' .. format('%.0f', used + cost)
      else
        vals[i] = format('%.0f:%.0f', we, used + cost)
      end
      ttls[i] = ttl
    end
  end
  -- Keep the tightest: a denial before an allowance; among denials the
  -- longest retry; among allowances the fewest remaining, then the longest
  -- reset.
  local tighter
  if i == 1 then
    tighter = true
  elseif ok ~= bok then
    tighter = ok == 0
  elseif ok == 0 then
    tighter = retry > bretry
  elseif rem ~= brem then
    tighter = rem < brem
  else
    tighter = reset > breset
  end
  if tighter then
    best, bok, brem, breset, bretry = i, ok, rem, reset, retry
  end
  if ok == 0 then allowed = 0 end
  reply[3 * i + 3], reply[3 * i + 4], reply[3 * i + 5] = rem, reset, retry
  if ok == 0 then spent[i] = -1 elseif a > 0 then spent[i] = a else spent[i] = 0 end
end
if allowed == 0 then
  -- Nothing is spent: the limits that would have allowed report their
  -- state without this call's cost.
  for i = 1, n do
    if spent[i] >= 0 then
      reply[3 * i + 3] = reply[3 * i + 3] + cost
      reply[3 * i + 4] = reply[3 * i + 4] - cost * spent[i]
    end
  end
end

if not peek then
  if allowed == 1 then
    for i = 1, n do
      redis.call('SET', KEYS[i], vals[i], 'PX', ttls[i])
    end
  elseif keeps then
    for i = 1, n do
      if keep[i] then redis.call('SET', KEYS[i], keep[i][1], 'PX', keep[i][2]) end
    end
  end
end
reply[1], reply[2], reply[3], reply[4], reply[5] = allowed, best, brem, breset, bretry
return reply
