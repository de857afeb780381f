-- window(sec, w) returns the UTC window of a quota or credits holding the
-- Unix time sec (whole seconds), as Unix seconds [ws, we): w is the window
-- as a string, '0' never (the window [0, 0): credits never refilled), '1'
-- minute, '2' hour, '3' day or '4' month. limit.lua, debit.lua and the
-- lease package's script follow this source.
local function window(sec, w)
  local floor = math.floor
  if w == '0' then
    return 0, 0
  elseif w == '4' then
    -- Month, by Howard Hinnant's civil_from_days and days_from_civil, in a
    -- year starting in March: mp is the month since March, yoe the year of
    -- the 400-year era.
    local z = floor(sec / 86400) + 719468
    local era = floor(z / 146097)
    local doe = z - era * 146097
    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
    local mp = floor((5 * doy + 2) / 153)
    local ws = (era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + floor((153 * mp + 2) / 5) - 719468) * 86400
    mp = mp + 1
    if mp == 12 then
      mp, yoe = 0, yoe + 1
      if yoe == 400 then era, yoe = era + 1, 0 end
    end
    return ws, (era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + floor((153 * mp + 2) / 5) - 719468) * 86400
  end
  local len = 86400
  if w == '1' then len = 60 elseif w == '2' then len = 3600 end
  local ws = sec - sec % len
  return ws, ws + len
end
