-- Decides all limits of one request for one key id, atomically.
--
-- KEYS[1]: the state key of the key id, "<prefix>{<key id>}".
-- ARGV[1]: cost (>= 1).
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]: limit i as "\n<entry name>=", a, b:
--   rate:  a = emission interval T in microseconds (> 0), b = burst B;
--   quota or credits: a = minus the count N (< 0), b = window (0 never,
--          for credits never refilled; 1 minute, 2 hour, 3 day, 4 month).
--
-- The state key holds "\n" followed by one "<name>=<value>\n" per limit.
-- Names hold no "\n" (the caller rejects them) but may hold "=", values
-- hold neither, so an entry's name ends at its last "=". Values are
-- integers in decimal:
--   rate:  "<tat>", the theoretical arrival time in Unix microseconds; it
--          expires at the TAT, when it no longer matters.
--   quota: "<window end in Unix seconds>:<used>"; it expires at the end of
--          the window. Credits never refilled have window end 0 and
--          never expire (nor does the key while it holds them).
-- The ":" tells the kinds apart, so a rate and a quota may share a name.
-- An entry is found with a plain search for "\n<name>=" checked against
-- the shape of its value. Entries of limits not in this call are copied
-- through while alive and dropped once expired; when the entries found
-- make up the whole value, there are none and nothing is scanned. The key
-- expires with its last entry.
--
-- Returns {allowed, index, remaining, reset, retry} for the tightest limit
-- (1-based index; reset and retry in microseconds), followed by remaining,
-- reset and retry of every limit in order: when denied, the
-- denying limit with the longest retry; when allowed, the limit with the
-- fewest remaining, then the longest reset. Nothing is written unless every
-- limit allows.
--
-- The time is Redis's TIME; Redis 5 and later replicate a script's effects,
-- so reading it before writing is allowed. Numbers are Lua doubles holding
-- integers below 2^53 (the caller keeps B*T below 2^50 and N below 10^14),
-- so the arithmetic is exact. Lua's own number-to-string conversion keeps
-- only 14 significant digits, so new values are formatted with "%.0f",
-- exact for any such integer (not "%d", which goes through a C long, 32
-- bits on some platforms), and the expiry reaches Redis as a number
-- (Redis formats numbers with 17 significant digits). Converting numbers
-- to strings is the costliest step here, so stored strings are reused
-- where they still hold: a quota's window end within the same window.
local floor, find, match, sub, format = math.floor, string.find, string.match, string.sub, string.format
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local cost = 1
if ARGV[1] ~= '1' then cost = tonumber(ARGV[1]) end
local n = (#ARGV - 1) / 3
local v = redis.call('GET', KEYS[1])

local w = '' -- the new entries, each "\n<name>=<value>"
local last = 0 -- the latest expiry among the entries written, Unix microseconds
local size = 1 -- the length of v taken by the entries found, and its first "\n"
local forever = false -- an entry written never expires
-- The reply: allowed, best, remaining, reset, retry of the tightest limit
-- (filled in at the end), then remaining, reset, retry of each limit.
local reply = {0, 0, 0, 0, 0}
local spent = {} -- per limit: what allowing cost it (a rate's interval, 0 for a count), or -1 when it denies
local fixes -- denied rates whose TAT was capped: {start, end, tat}

local allowed, best, bok, brem, breset, bretry = 1, 0, 1, 0, 0, 0
for i = 1, n do
  local pat, a, b = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), ARGV[3 * i + 1]
  -- The stored state: a rate's TAT (a number), or a quota's window end
  -- and count (strings).
  local s1, s2
  local vs, ve -- where a rate's value is in v
  if v then
    -- Every "\n" starts an entry, so a match is an entry whose name starts
    -- with the name; it is this limit's when the rest has a value's shape.
    local p = find(v, pat, 1, true)
    while p do
      p = p + #pat
      if a > 0 then
        -- Digits up to the "\n": the rest of another entry holds a "=" or
        -- a ":", which tonumber refuses.
        local e = find(v, '\n', p, true)
        s1 = tonumber(sub(v, p, e - 1))
        if s1 then
          size = size + #pat + e - p
          vs, ve = p, e - 1
          break
        end
      else
        s1, s2 = match(v, '^(%d+):(%d+)\n', p)
        if s1 then
          size = size + #pat + #s1 + 1 + #s2
          break
        end
      end
      p = find(v, pat, p, true)
    end
  end
  local ok, rem, reset, retry = 0, 0, 0, 0
  if a > 0 then
    -- GCRA: allowed when max(TAT, now) + cost*T - now <= B*T.
    b = tonumber(b)
    local tau = a * b
    local tat = now
    if s1 and s1 > now then tat = s1 end
    -- A TAT beyond the burst window (Redis's clock stepped back) counts
    -- as now + B*T, so a step back never locks a subject out longer.
    local capped = false
    if tat > now + tau then tat, capped = now + tau, true end
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
        if allowed == 1 then
          w = w .. pat .. format('%.0f', nt)
          if nt > last then last = nt end
        end
      end
    end
    if rem < 0 then rem = 0 elseif rem > b then rem = b end
    if ok == 0 and capped then
      fixes = fixes or {}
      fixes[#fixes + 1] = {vs, ve, tat}
    end
  else
    -- The UTC window holding now, as Unix seconds [ws, we).
    local ws, we
    if b == '0' then
      ws, we = 0, 0
    elseif b == '4' then
      -- Month, by Howard Hinnant's civil_from_days and days_from_civil,
      -- in a year starting in March: mp is the month since March, yoe the
      -- year of the 400-year era.
      local z = floor(sec / 86400) + 719468
      local era = floor(z / 146097)
      local doe = z - era * 146097
      local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
      local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
      local mp = floor((5 * doy + 2) / 153)
      ws = (era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + floor((153 * mp + 2) / 5) - 719468) * 86400
      mp = mp + 1
      if mp == 12 then
        mp, yoe = 0, yoe + 1
        if yoe == 400 then era, yoe = era + 1, 0 end
      end
      we = (era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + floor((153 * mp + 2) / 5) - 719468) * 86400
    else
      local len = 86400
      if b == '1' then len = 60 elseif b == '2' then len = 3600 end
      ws = sec - sec % len
      we = ws + len
    end
    local used = 0
    if s1 and tonumber(s1) == we then
      used = tonumber(s2)
    else
      s1 = nil
    end
    rem = -a - used
    if rem < 0 then rem = 0 end
    reset = we * 1000000 - now
    if we == 0 then reset = 0 end
    if cost > rem then
      retry = reset
    else
      ok = 1
      rem = rem - cost
      if allowed == 1 then
        if s1 then
          w = w .. pat .. s1 .. ':' .. format('%.0f', used + cost)
        else
          w = w .. pat .. format('%.0f:%.0f', we, cost)
        end
        if we == 0 then forever = true end
        if we * 1000000 > last then last = we * 1000000 end
      end
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


if allowed == 1 then
  if v and size ~= #v then
    -- Entries of other limits: keep those still alive.
    local other = ''
    for e, name, val in string.gmatch(v, '(([^\n]-)=([%d:]+))\n') do
      local pat = '\n' .. name .. '='
      local c = find(val, ':', 1, true)
      local mine = false
      for i = 1, n do
        -- A quota's a starts with "-".
        if ARGV[3 * i - 1] == pat and (string.byte(ARGV[3 * i]) == 45) == (c ~= nil) then
          mine = true
          break
        end
      end
      if not mine then
        local x
        if c then x = tonumber(string.sub(val, 1, c - 1)) * 1000000 else x = tonumber(val) end
        if x == 0 then forever = true end
        if x > now or x == 0 then
          other = other .. pat .. val
          if x > last then last = x end
        end
      end
    end
    w = other .. w
  end
  if forever then
    redis.call('SET', KEYS[1], w .. '\n')
  else
    redis.call('SET', KEYS[1], w .. '\n', 'PX', floor((last - now + 999) / 1000))
  end
end
if allowed == 0 and fixes then
  -- Nothing is spent, but a TAT capped after a step back of the clock is
  -- stored capped, so that the lockout ends a burst window from now.
  table.sort(fixes, function(x, y) return x[1] > y[1] end)
  for _, f in ipairs(fixes) do
    v = sub(v, 1, f[1] - 1) .. format('%.0f', f[3]) .. sub(v, f[2] + 1)
  end
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[1], v, 'PX', ttl)
  else
    redis.call('SET', KEYS[1], v)
  end
end
reply[1], reply[2], reply[3], reply[4], reply[5] = allowed, best, brem, breset, bretry
return reply
