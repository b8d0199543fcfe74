-- mlgate-rls: create a record unless it exists (SET NX semantics). KEYS[1] record;
-- ARGV[1] value, ARGV[2] first version. Returns 1 if created, 0 if it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', ARGV[2], 'w', '')
return 1
