-- carried(key, we, count) returns what credits spent under the previous
-- release's storage count against the credits of state key key (a key of
-- this release, see the package documentation) in the window ending at we
-- (0 for credits never refilled), at most count; or nil when there is none
-- to carry: key is not a credits key, or the call passed no legacy key, or
-- the legacy key does not exist. limit.lua, debit.lua and the lease
-- package's script follow this source, and call it only when key does not
-- exist.
--
-- KEYS[n+1], after the n state keys of the call (n is the variable
-- nlimits, which the caller defines before this source), is the legacy key
-- "<prefix>{<subject>}" of the call's subject, when the caller passed it.
-- It holds "\n" followed by one "<entry>=<value>\n" per limit, where the
-- entry is the limit's name, or, for a limit with its own Subject,
-- "<name>@<kind><Subject>" (kind r, q or c), and the value of a quota or
-- credits is "<window end in Unix seconds>:<used>". Names hold neither
-- "@" nor "=", Subjects no "\n", so an entry's name ends at its last "=".
-- It is read at most once per call, and never written.
--
-- Credits without a limit Subject (a customer's plan or grant) carry the
-- sum of the entries "<name>" and "<name>@c<any Subject>" (the previous
-- release counted a plan's credits per key lineage); credits with a limit
-- Subject carry the entry "<name>@c<Subject>". Only entries of the window
-- ending at we count.
local legacyKey = KEYS[nlimits + 1]
local legacyValue -- nil until read, then the value or false
local function carried(key, we, count)
  if not legacyKey then return nil end
  local find, match, sub = string.find, string.match, string.sub
  -- key is "<prefix>{<tag>}<kind><length of name>:<name>[:<Subject>]":
  -- neither the prefix nor the tag holds "}".
  local p = find(key, '}', 1, true)
  if sub(key, p + 1, p + 1) ~= 'c' then return nil end
  if legacyValue == nil then legacyValue = redis.call('GET', legacyKey) end
  if not legacyValue then return nil end
  local len, q = match(key, '^(%d+):()', p + 2)
  local e = q + tonumber(len) - 1
  local name = sub(key, q, e)
  local v, sum = legacyValue, 0
  -- add adds an entry's count when it is of the window; first adds the
  -- first entry found by pat whose value has a count's shape.
  local function add(s1, s2)
    if tonumber(s1) == we then
      sum = sum + tonumber(s2)
      if sum > count then sum = count end
    end
  end
  local function first(pat)
    local h = find(v, pat, 1, true)
    while h do
      local s1, s2 = match(v, '^(%d+):(%d+)\n', h + #pat)
      if s1 then
        add(s1, s2)
        return
      end
      h = find(v, pat, h + 1, true)
    end
  end
  if e < #key then
    first('\n' .. name .. '@c' .. sub(key, e + 2) .. '=')
  else
    first('\n' .. name .. '=')
    local pat = '\n' .. name .. '@c'
    local h = find(v, pat, 1, true)
    while h do
      -- The greedy run ends the entry's name at its last "=".
      local s1, s2 = match(v, '^[^\n]*=(%d+):(%d+)\n', h + #pat)
      if s1 then add(s1, s2) end
      h = find(v, pat, h + 1, true)
    end
  end
  return sum
end
