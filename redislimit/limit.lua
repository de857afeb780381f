-- Decides all limits of one request for one key id, atomically.
--
-- KEYS[i]: the state key of limit i, all hash-tagged by the key id.
-- ARGV[1]: cost (>= 1).
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]: limit i as kind, a, b:
--   kind 1 (rate):  a = emission interval T in microseconds, b = burst B;
--   kind 2 (quota): a = count N, b = window (1 minute, 2 hour, 3 day,
--                   4 month).
--
-- State, all integers in decimal:
--   rate:  "<tat>", the theoretical arrival time in Unix microseconds;
--          expires at the TAT, when it no longer matters.
--   quota: "<window start in Unix seconds>:<used>"; expires at the window
--          end.
--
-- Returns {allowed, then per limit: allowed, remaining, reset, retry}, with
-- reset and retry in microseconds. Nothing is written unless every limit
-- allows.
--
-- The time is Redis's TIME. Numbers are Lua doubles holding integers below
-- 2^53 (the caller keeps B*T and N below 2^50), so the arithmetic is exact;
-- integers are formatted with %d, never tostring.
redis.replicate_commands()

local floor = math.floor
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])

-- Days since 1970-01-01 of the first day of month m of year y (proleptic
-- Gregorian), after Howard Hinnant's days_from_civil.
local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Year and month of day z since 1970-01-01, after civil_from_days.
local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The UTC window holding now, as Unix seconds [start, end).
local function window(w)
  local size
  if w == 1 then size = 60
  elseif w == 2 then size = 3600
  elseif w == 3 then size = 86400
  else
    local y, m = civil_from_days(floor(sec / 86400))
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m) * 86400, days_from_civil(ny, nm) * 86400
  end
  local s = sec - sec % size
  return s, s + size
end

local out = {1}
local writes = {}
for i = 1, #KEYS do
  local j = 3 * i - 1
  local kind, a, b = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  local v = redis.call('GET', KEYS[i])
  local ok, rem, reset, retry = 0, 0, 0, 0
  if kind == 1 then
    local T, B = a, b
    local tau = T * B
    local tat = now
    if v then
      local x = tonumber(v)
      if x and x > now then tat = x end
    end
    local d = tat - now
    rem = floor((tau - d) / T)
    if cost > B then
      -- Can never fit: wait until full, at least one interval.
      reset = d
      if reset < T then reset = T end
      retry = reset
    else
      local nt = tat + cost * T
      if nt - now > tau then
        reset = d
        retry = nt - now - tau
      else
        ok = 1
        rem = floor((tau - (nt - now)) / T)
        reset = nt - now
        writes[#writes + 1] = {KEYS[i], string.format('%d', floor((reset + 999) / 1000)), string.format('%d', nt)}
      end
    end
    if rem < 0 then rem = 0 elseif rem > B then rem = B end
  else
    local N = a
    local ws, we = window(b)
    local used = 0
    if v then
      local p = string.find(v, ':', 1, true)
      if p and tonumber(string.sub(v, 1, p - 1)) == ws then
        used = tonumber(string.sub(v, p + 1)) or 0
      end
    end
    rem = N - used
    if rem < 0 then rem = 0 end
    reset = we * 1000000 - now
    if cost > rem then
      retry = reset
    else
      ok = 1
      rem = rem - cost
      writes[#writes + 1] = {KEYS[i], string.format('%d', floor((reset + 999) / 1000)), string.format('%d:%d', ws, used + cost)}
    end
  end
  if ok == 0 then out[1] = 0 end
  out[#out + 1] = ok
  out[#out + 1] = rem
  out[#out + 1] = reset
  out[#out + 1] = retry
end

if out[1] == 1 then
  for _, w in ipairs(writes) do
    redis.call('PSETEX', w[1], w[2], w[3])
  end
end
return out
