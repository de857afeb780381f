-- Decides a call whose only limit is a rate, as limit.lua decides it, in
-- fewer steps; or, as Peek, answers what a call of cost 1 would get,
-- writing nothing. The caller prepends "local peek = false" (Allow) or
-- "local peek = true" (Peek) to this source.
--
-- KEYS[1]: the rate's state key, as for limit.lua.
-- ARGV[1]: cost (>= 1); ARGV[2]: the emission interval T in microseconds
--   (> 0); ARGV[3]: the burst B.
--
-- The key holds what limit.lua writes: "<tat>:<seen>" in Unix
-- microseconds, expiring at the TAT. Returns {allowed, remaining, reset,
-- retry}, reset and retry in microseconds, as limit.lua's reply for its
-- single limit.
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local cost, a, b = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tau = a * b
local tat, moved = now, false
local raw = redis.call('GET', KEYS[1])
if raw then
  local s1, s2 = string.match(raw, '^(%d+):(%d+)$')
  if s1 then
    local st, seen = tonumber(s1), tonumber(s2)
    if now < seen then
      -- Redis's clock stepped back: as limit.lua, no time has passed.
      local debt = st - seen
      if debt < 0 then debt = 0 end
      tat, moved = now + debt, true
    elseif st > now then
      tat = st
    end
  end
end
if tat > now + tau then tat, moved = now + tau, true end
local d = tat - now
local nt = tat + cost * a
if cost <= b and nt - now <= tau then
  local reset = nt - now
  if not peek then
    redis.call('SET', KEYS[1], string.format('%.0f:%.0f', nt, now), 'PX', math.floor((reset + 999) / 1000))
  end
  return {1, math.floor((tau - reset) / a), reset, 0}
end
local reset, retry = d, nt - now - tau
if cost > b then
  -- Can never fit: wait until full, at least one interval.
  if reset < a then reset = a end
  retry = reset
end
if moved and d > 0 and not peek then
  -- Nothing is spent, but the state moves to the new clock.
  redis.call('SET', KEYS[1], string.format('%.0f:%.0f', tat, now), 'PX', math.floor((d + 999) / 1000))
end
local rem = math.floor((tau - d) / a)
if rem < 0 then rem = 0 elseif rem > b then rem = b end
return {0, rem, reset, retry}
