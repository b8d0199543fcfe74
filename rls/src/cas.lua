-- mlgate-rls: compare-and-swap of one record (see store.rs). KEYS[1] record;
-- ARGV[1] expected version ("0": any), ARGV[2] new value, ARGV[3] this write's id.
-- Returns the new version, 0 on a version mismatch, -1 if this write was already applied.
local n = redis.call('HGET', KEYS[1], 'n')
if n then
  local w = redis.call('HGET', KEYS[1], 'w') or ''
  if string.find(w, ARGV[3], 1, true) then return -1 end
end
if ARGV[1] ~= '0' and n ~= ARGV[1] then return 0 end
local nn = ((tonumber(n) or 0) % 4294967295) + 1
local w = string.sub(ARGV[3] .. ' ' .. (redis.call('HGET', KEYS[1], 'w') or ''), 1, 136)
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', nn, 'w', w)
return nn
