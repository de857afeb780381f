-- Decides all limits of one request for one key id, atomically.
--
-- KEYS[i]: the state key of limit i, all hash-tagged by the key id.
-- ARGV[1]: cost (>= 1).
-- ARGV[2i], ARGV[2i+1]: limit i as a, b:
--   rate:  a = emission interval T in microseconds (> 0), b = burst B;
--   quota: a = minus the count N (< 0), b = window (1 minute, 2 hour,
--          3 day, 4 month).
--
-- State, integers in decimal:
--   rate:  "<tat>", the theoretical arrival time in Unix microseconds;
--          expires at the TAT, when it no longer matters.
--   quota: "<window start in Unix seconds>:<used>"; expires at the end of
--          the window.
--
-- Returns {allowed, index, remaining, reset, retry} for the tightest limit
-- (1-based index; reset and retry in microseconds): when denied, the
-- denying limit with the longest retry; when allowed, the limit with the
-- fewest remaining, then the longest reset. Nothing is written unless every
-- limit allows.
--
-- The time is Redis's TIME; Redis 5 and later replicate a script's effects,
-- so reading it before writing is allowed. Numbers are Lua doubles holding
-- integers below 2^53 (the caller keeps B*T below 2^50 and N below 10^14),
-- so the arithmetic is exact. Numbers reach Redis exactly as command
-- arguments (Redis formats them with 17 significant digits); Lua's own
-- number-to-string conversion keeps only 14, so it is used only for the
-- quota state (a 10-digit window start and a count below 10^14).
local floor = math.floor
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local n = #KEYS
local vals = redis.call('MGET', unpack(KEYS))

local allowed, best, bok, brem, breset, bretry = 1, 0, 1, 0, 0, 0
local new = {} -- per limit i: the new value at 2i-1, its lifetime in ms at 2i
for i = 1, n do
  local a, b = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local v = vals[i]
  local ok, rem, reset, retry = 0, 0, 0, 0
  if a > 0 then
    -- GCRA: allowed when max(TAT, now) + cost*T - now <= B*T.
    local tau = a * b
    local tat = now
    if v then
      local x = tonumber(v)
      if x and x > now then tat = x end
    end
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
        new[2 * i - 1] = nt
        new[2 * i] = floor((reset + 999) / 1000)
      end
    end
    if rem < 0 then rem = 0 elseif rem > b then rem = b end
  else
    -- The UTC window holding now, as Unix seconds [ws, we).
    local ws, we
    if b == 4 then
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
      local size = 86400
      if b == 1 then size = 60 elseif b == 2 then size = 3600 end
      ws = sec - sec % size
      we = ws + size
    end
    local used = 0
    local tag = ws .. ':'
    if v and string.sub(v, 1, #tag) == tag then
      used = tonumber(string.sub(v, #tag + 1)) or 0
    end
    rem = -a - used
    if rem < 0 then rem = 0 end
    reset = we * 1000000 - now
    if cost > rem then
      retry = reset
    else
      ok = 1
      rem = rem - cost
      new[2 * i - 1] = tag .. (used + cost)
      new[2 * i] = floor((reset + 999) / 1000)
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
end

if allowed == 1 then
  for i = 1, n do
    redis.call('PSETEX', KEYS[i], new[2 * i], new[2 * i - 1])
  end
end
return {allowed, best, brem, breset, bretry}
