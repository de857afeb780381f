-- Takes back, spends, leases and debits units of the limits of one call
-- for one subject, atomically, in the keys redislimit's Allow uses. The
-- caller prepends nlimits, window.lua and legacy.lua (redislimit's
-- internal/storage) to this source.
--
-- KEYS[i]: the state key of limit i (storage.Keys); all keys of a call
--   share the subject's hash tag. KEYS[n+1], optional: the subject's
--   legacy key (see legacy.lua).
-- ARGV[1]: how long the state of credits never refilled is kept after
--   their last spend, in milliseconds.
-- ARGV[2]: '1' to only read (Peek): spends are decided, not made, and
--   nothing is written; '0' otherwise.
-- ARGV[8i-5] to ARGV[8i+2]: limit i, as a, b, d, spend, want, back, tag,
--   debit:
--   a, b: as for limit.lua (rate: interval T in µs and burst B; quota or
--     credits: minus the count N and the window);
--   d: a rate's lease life in µs (0 for a count);
--   spend: units spent now, as redislimit's Allow spends them (0: none);
--     every limit with a spend must admit it, or none is spent;
--   want: units to lease (0: none);
--   back: units of an earlier lease given back, with tag the value the
--     lease left in the key (a rate's TAT, a count's window end);
--   debit: units added to a count's used without an admission check (a
--     refund when negative), as debit.lua does.
--
-- Each key holds what limit.lua's does. A lease is a spend that the
-- instance makes later, locally:
--   quota or credits: the units leased are added to used, at most what
--     remains and at most half of it (rounded up), so that several
--     instances share what is left. Units given back are taken from used
--     when the key still holds the window the lease was taken in.
--   rate: the units leased are placed at now + d, as if they arrived
--     when the lease ends: the TAT becomes max(TAT, now + d) + g*T, at most
--     now + B*T. The instance spends them before now + d, so that every
--     window of the rate holds at most what one exact GCRA admits, with
--     Allow's spends placed at now (see the package documentation). Units
--     given back are taken off the TAT only when it is still the value the
--     lease wrote, that is when nothing arrived after them.
--
-- Returns {allowed}, then for each limit granted, back (units given back
-- that were taken), remaining, reset, retry, tag and ok: remaining as
-- Allow reports it (a rate's against its burst, a count's count minus
-- used, below zero for a debt), reset and retry in µs, tag the value to
-- give units back against, ok 0 when the limit denied the spend. Nothing
-- is spent nor leased when a spend is denied; units given back and debits
-- apply all the same. When only reading, remaining and reset are the
-- state before the spends.
local floor, match, format = math.floor, string.match, string.format
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local maxUsed = 4503599627370496 -- 2^52
local write = ARGV[2] ~= '1'

local allowed = 1
local s = {}
for i = 1, nlimits do
  local o = 2 + 8 * (i - 1)
  local a, b, d = tonumber(ARGV[o + 1]), ARGV[o + 2], tonumber(ARGV[o + 3])
  local spend, want, back, tag, debit = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6]), ARGV[o + 7], tonumber(ARGV[o + 8])
  local raw = redis.call('GET', KEYS[i])
  local s1, s2 = match(raw or '', '^(%d+):(%d+)$')
  local e = {a = a, d = d, spend = spend, want = want, granted = 0, back = 0, ok = 1, retry = 0, dirty = false}
  s[i] = e
  if a > 0 then
    local bb = tonumber(b)
    local tau = a * bb
    local tat = now
    if s1 then
      local x, seen = tonumber(s1), tonumber(s2)
      if back > 0 and s1 == tag then
        -- Nothing arrived after the lease: its last units leave the TAT.
        x = x - back * a
        e.back, e.dirty = back, true
      end
      if now < seen then
        -- Redis's clock stepped back: as limit.lua, no time has passed.
        local debt = x - seen
        if debt < 0 then debt = 0 end
        tat, e.dirty = now + debt, true
      elseif x > now then
        tat = x
      end
    end
    if tat > now + tau then tat, e.dirty = now + tau, true end
    e.tat, e.tau, e.b = tat, tau, bb
    if spend > 0 then
      if spend > bb then
        e.ok = 0
        e.retry = tat - now
        if e.retry < a then e.retry = a end
      elseif tat + spend * a - now > tau then
        e.ok = 0
        e.retry = tat + spend * a - now - tau
      end
    end
  else
    local n = -a
    local ws, we = window(sec, b)
    local used = 0
    if s1 and tonumber(s1) == we then
      used = tonumber(s2)
      if back > 0 and s1 == tag then
        local r = back
        if r > used then r = used end
        used, e.back, e.dirty = used - r, r, true
      end
    elseif not raw then
      local c = carried(KEYS[i], we, n)
      if c then used, e.dirty = c, true end
    end
    if debit ~= 0 then
      local u = used + debit
      if u < 0 then u = 0 elseif u > maxUsed then u = maxUsed end
      if u ~= used or s1 then used, e.dirty = u, true end
    end
    e.n, e.we, e.used = n, we, used
    e.reset = we * 1000000 - now
    if we == 0 then e.reset = 0 end
    if spend > 0 and spend > n - used then
      e.ok = 0
      e.retry = e.reset
    end
  end
  if e.ok == 0 then allowed = 0 end
end

local reply = {allowed}
for i = 1, nlimits do
  local e = s[i]
  local rem, reset, tag
  if e.a > 0 then
    local a, tat = e.a, e.tat
    if allowed == 1 and write then
      if e.spend > 0 then
        if tat < now then tat = now end
        tat, e.dirty = tat + e.spend * a, true
      end
      if e.want > 0 then
        local base = tat
        if base < now + e.d then base = now + e.d end
        local g = floor((now + e.tau - base) / a)
        if g > e.want then g = e.want end
        if g > 0 then
          tat, e.granted, e.dirty = base + g * a, g, true
        end
      end
    end
    if e.want > 0 and e.granted < e.want and e.retry == 0 then
      -- When one more unit could be leased.
      local base = tat
      if base < now + e.d then base = now + e.d end
      e.retry = base + a - now - e.tau
      if e.retry < 0 then e.retry = 0 end
    end
    reset = tat - now
    if reset < 0 then reset = 0 end
    rem = floor((e.tau - reset) / a)
    if rem < 0 then rem = 0 elseif rem > e.b then rem = e.b end
    if e.dirty and write then
      if tat > now then
        redis.call('SET', KEYS[i], format('%.0f:%.0f', tat, now), 'PX', floor((tat - now + 999) / 1000))
      else
        redis.call('DEL', KEYS[i])
      end
    end
    tag = tat
  else
    local used = e.used
    if allowed == 1 and write then
      if e.spend > 0 then used, e.dirty = used + e.spend, true end
      if e.want > 0 then
        local left = e.n - used
        local g = e.want
        if g > left - floor(left / 2) then g = left - floor(left / 2) end
        if g > 0 then used, e.granted, e.dirty = used + g, g, true end
      end
    end
    if e.want > 0 and e.granted < e.want and e.n - used <= 0 and e.retry == 0 then
      e.retry = e.reset
    end
    rem, reset, tag = e.n - used, e.reset, e.we
    if e.dirty and write then
      local ttl
      if e.we == 0 then ttl = ARGV[1] else ttl = floor((e.reset + 999) / 1000) end
      redis.call('SET', KEYS[i], format('%.0f:%.0f', e.we, used), 'PX', ttl)
    end
  end
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = e.granted, e.back, rem, reset
  reply[n + 5], reply[n + 6], reply[n + 7] = e.retry, tag, e.ok
end
return reply
