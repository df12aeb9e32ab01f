/**
 * The Lua scripts that make a node's append atomic in Redis: the checks (compare-and-set on stream ids, the
 * operation id, the layout) and the append happen in one script, so no other node's append comes between them.
 */

/** `before(a, b)`: stream id a is before b (ids as numbers: '10-0' is after '9-0'). */
const BEFORE = `
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
`;

/**
 * APPEND. KEYS: log, last, values, layout, at, op (the operation id's key; ignored when ARGV[6] is '0').
 * ARGV: kind ('w' write, 'r' register, 'x' remove), node, token, maxlen, casPos ('' none), opTtlMs, opWhat, n,
 * then n triples (name, value, layout code — '' for a write of a variable the cluster already has), then the
 * stream id the appending node had applied (its file's state when it took the write).
 * A removal leaves its id in `last` (no layout): a write with its shape from a node that had not applied that
 * removal raced it, and is appended without the shape, changing no hash (every node skips it: the variable is gone).
 * Returns {'ok', id, previous id} | {'dup', id} | {'reused', id} | {'conflict', name} | {'layout', name} | {'missing', name}.
 * With casPos, a write is refused (conflict) if any of its variables was written after casPos in the stream.
 */
export const APPEND_SCRIPT = `${BEFORE}
local kind = ARGV[1]
local withOp = ARGV[6] ~= '0'
if withOp then
  local known = redis.call('GET', KEYS[6])
  if known then
    local id, what = string.match(known, '^([^|]*)|(.*)$')
    if what ~= ARGV[7] then return {'reused', id} end
    return {'dup', id}
  end
end
local n = tonumber(ARGV[8])
local seen = ARGV[9 + n * 3] or ''
local stale = {}
for i = 0, n - 1 do
  local name = ARGV[9 + i * 3]
  local code = ARGV[11 + i * 3]
  local known = redis.call('HGET', KEYS[4], name)
  if kind == 'x' then
    if not known then return {'missing', name} end
  elseif known and code ~= '' and known ~= code then
    return {'layout', name}
  elseif kind == 'w' then
    if not known and code == '' then return {'missing', name} end
    local last = redis.call('HGET', KEYS[2], name)
    if not known and last and seen ~= '' and before(seen, last) then stale[i] = true end
    if ARGV[5] ~= '' then
      if last and before(ARGV[5], last) then return {'conflict', name} end
    end
  end
end
local fields = {'k', kind, 'n', ARGV[2], 't', ARGV[3]}
for i = 0, n - 1 do
  local name, value, code = ARGV[9 + i * 3], ARGV[10 + i * 3], ARGV[11 + i * 3]
  if code ~= '' and not stale[i] then
    fields[#fields + 1] = 'm' .. name
    fields[#fields + 1] = code
  end
  fields[#fields + 1] = kind .. name
  fields[#fields + 1] = value
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
for i = 0, n - 1 do
  local name, value, code = ARGV[9 + i * 3], ARGV[10 + i * 3], ARGV[11 + i * 3]
  if kind == 'x' then
    redis.call('HSET', KEYS[2], name, id)
    redis.call('HDEL', KEYS[3], name)
    redis.call('HDEL', KEYS[4], name)
  elseif not stale[i] then
    if code ~= '' then redis.call('HSET', KEYS[4], name, code) end
    redis.call('HSET', KEYS[2], name, id)
    if kind == 'w' then redis.call('HSET', KEYS[3], name, value) end
  end
end
local prev = redis.call('GET', KEYS[5]) or ''
redis.call('SET', KEYS[5], id)
if withOp then redis.call('SET', KEYS[6], id .. '|' .. ARGV[7], 'PX', ARGV[6]) end
return {'ok', id, prev}
`;

/**
 * SNAPSHOT. KEYS: at, layout, values. Returns {at, layout pairs, value pairs}, read in one script: consistent
 * with each other and with the stream at `at` (appends change them only inside APPEND).
 */
export const SNAPSHOT_SCRIPT = `
return {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
`;

/** ANNOUNCE. KEYS: catalog set, catalog stream. ARGV: tenant, service. Appends a service to the catalog once. */
export const ANNOUNCE_SCRIPT = `
if redis.call('SADD', KEYS[1], ARGV[1] .. '/' .. ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', 't', ARGV[1], 's', ARGV[2])
end
return 1
`;
