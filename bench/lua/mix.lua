-- The seed article's mix of signed-in requests (bench/mix.py writes the data file):
--   50% GET    {api}/products/{id}/              (id from a fixed set of products)
--   20% GET    {api}/products/?limit=20&offset=N  (N = 20 * random page)
--   20% POST   {api}/products/                   (a new BENCH-MIX- SKU)
--    5% PATCH or PUT of a pool product, with its owner's token
--    5% DELETE of a pool product, with its owner's token
--
-- Usage: wrk ... -s mix.lua URL -- DATA_FILE THREADS RUN_ID SEED
-- DATA_FILE lines: "api PREFIX", "pages N", "token JWT" (user 1, 2, ...),
-- "detail ID", "category ID", "pool ID OWNER_INDEX CATEGORY_ID SKU".
-- Each thread owns a disjoint slice of the pool: its deletes take products from
-- the slice's end and its updates pick among the ones left, so no product is
-- deleted twice and none is updated after its deletion.
--
-- response() has no request context: the X-Request-ID header (echoed by the
-- app) starts with the kind's letter (d, l, c, u, x), which tells the kind.
-- Pacing: when the environment variable BENCH_MIX_RATE (requests/s per thread)
-- is above 0, delay() hands out send slots 1/rate apart (no catch-up when the
-- server falls behind, like Locust's constant_pacing); wrk's latency clock
-- starts after the delay.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local clock = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local api, pages, run_id = "/api/v1", 50, "run"
local tokens, details, categories, pool = {}, {}, {}, {}
local lo, hi, serial = 1, 0, 0
-- Counters read by done() through thread:get (numbers only).
n_d, n_l, n_c, n_u, n_x = 0, 0, 0, 0, 0
bad_d, bad_l, bad_c, bad_u, bad_x, bad_other = 0, 0, 0, 0, 0, 0
hits, misses, exhausted = 0, 0, 0

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open mix data file " .. tostring(args[1]))
  local thread_count = tonumber(args[2]) or 1
  run_id = args[3] or run_id
  math.randomseed((tonumber(args[4]) or 1) * 1000 + (thread_index or 0))
  local all_pool = {}
  for line in file:lines() do
    local kind, rest = line:match("^(%a+)%s+(.+)$")
    if kind == "token" then
      table.insert(tokens, "Bearer " .. rest)
    elseif kind == "detail" then
      table.insert(details, rest)
    elseif kind == "category" then
      table.insert(categories, rest)
    elseif kind == "pool" then
      local id, owner, category, sku = rest:match("^(%d+)%s+(%d+)%s+(%d+)%s+(%S+)$")
      table.insert(all_pool, { id = id, owner = tonumber(owner), category = category, sku = sku })
    elseif kind == "api" then
      api = rest
    elseif kind == "pages" then
      pages = tonumber(rest)
    end
  end
  file:close()
  assert(#tokens > 0 and #details > 0 and #categories > 0, "incomplete mix data file")
  local share = math.floor(#all_pool / thread_count)
  local first = (thread_index or 0) * share
  for i = first + 1, first + share do
    table.insert(pool, all_pool[i])
  end
  lo, hi = 1, #pool
end

local function headers(kind, token)
  serial = serial + 1
  return {
    ["Authorization"] = token,
    ["X-Request-ID"] = kind .. "-" .. run_id .. "-" .. (thread_index or 0) .. "-" .. serial,
    ["Content-Type"] = "application/json",
  }
end

local function any_token()
  return tokens[math.random(#tokens)]
end

local function price()
  return string.format("%d.%02d", math.random(1, 500), math.random(0, 99))
end

local function detail()
  local id = details[math.random(#details)]
  return wrk.format("GET", api .. "/products/" .. id .. "/", headers("d", any_token()))
end

-- BENCH_MIX_ONLY=c sends creates only (the harness's "creates x ping" row).
local only_creates = os.getenv("BENCH_MIX_ONLY") == "c"

function request()
  local roll = only_creates and 80 or math.random(100)
  if roll <= 50 then
    return detail()
  elseif roll <= 70 then
    local offset = 20 * (math.random(pages) - 1)
    return wrk.format("GET", api .. "/products/?limit=20&offset=" .. offset, headers("l", any_token()))
  elseif roll <= 90 then
    serial = serial + 1
    local body = string.format(
      '{"sku": "BENCH-MIX-%s-%d-%d", "name": "Mix product %d", '
        .. '"description": "Made by the bench mix.", "price": "%s", "stock": %d, "category": %s}',
      run_id, thread_index or 0, serial, serial, price(), math.random(0, 100),
      categories[math.random(#categories)]
    )
    return wrk.format("POST", api .. "/products/", headers("c", any_token()), body)
  end
  if hi < lo then
    -- The slice is used up (a pool too small for the run): read instead, and say so.
    exhausted = exhausted + 1
    return detail()
  end
  if roll <= 95 then
    local product = pool[math.random(lo, hi)]
    local path = api .. "/products/" .. product.id .. "/"
    local h = headers("u", tokens[product.owner])
    if math.random(2) == 1 then
      return wrk.format("PATCH", path, h, string.format('{"price": "%s", "stock": %d}', price(), math.random(0, 100)))
    end
    local body = string.format(
      '{"sku": "%s", "name": "Mix product replaced", "description": "Replaced by the bench mix.", '
        .. '"price": "%s", "stock": %d, "category": %s}',
      product.sku, price(), math.random(0, 100), product.category
    )
    return wrk.format("PUT", path, h, body)
  end
  local product = pool[hi]
  hi = hi - 1
  return wrk.format("DELETE", api .. "/products/" .. product.id .. "/", headers("x", tokens[product.owner]))
end

local rate = tonumber(os.getenv("BENCH_MIX_RATE") or "0") or 0
if rate > 0 then
  local interval = 1000 / rate
  local next_slot = 0
  function delay()
    local now = now_ms()
    local slot = next_slot > now and next_slot or now
    next_slot = slot + interval
    return math.floor(slot - now)
  end
end

function response(status, headers, body)
  local id = headers["X-Request-ID"] or headers["x-request-id"] or ""
  local kind = id:sub(1, 1)
  local bad = status >= 400
  if kind == "d" then
    n_d = n_d + 1
    if bad then bad_d = bad_d + 1 end
    local cache = headers["X-Cache"] or headers["x-cache"]
    if cache == "HIT" then
      hits = hits + 1
    elseif cache == "MISS" then
      misses = misses + 1
    end
  elseif kind == "l" then
    n_l = n_l + 1
    if bad then bad_l = bad_l + 1 end
  elseif kind == "c" then
    n_c = n_c + 1
    if bad then bad_c = bad_c + 1 end
  elseif kind == "u" then
    n_u = n_u + 1
    if bad then bad_u = bad_u + 1 end
  elseif kind == "x" then
    n_x = n_x + 1
    if bad then bad_x = bad_x + 1 end
  elseif bad then
    bad_other = bad_other + 1
  end
end

local COUNTERS = {
  "n_d", "n_l", "n_c", "n_u", "n_x",
  "bad_d", "bad_l", "bad_c", "bad_u", "bad_x", "bad_other",
  "hits", "misses", "exhausted",
}

function done(summary, latency, requests)
  local totals = {}
  for _, name in ipairs(COUNTERS) do
    totals[name] = 0
    for _, thread in ipairs(threads) do
      totals[name] = totals[name] + (tonumber(thread:get(name)) or 0)
    end
  end
  local parts = {}
  for _, name in ipairs(COUNTERS) do
    table.insert(parts, string.format('"%s": %d', name, totals[name]))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, '
      .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, %s}\n',
    summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, table.concat(parts, ", ")
  ))
end
