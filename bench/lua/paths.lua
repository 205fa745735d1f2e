-- Replay a list of request paths, one per line, from the file named by the first
-- script argument ("wrk ... -s paths.lua URL -- FILE"). Lines are "PATH" or
-- "METHOD PATH". Each thread starts at its own offset and walks the list in order,
-- so with more lines than requests no path is requested twice in a run (the
-- "uncached" scenarios rely on that). Headers (Authorization, Cookie) come from
-- wrk's -H options, which wrk.format applies to every request.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local position = 1

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open paths file " .. tostring(args[1]))
  for line in file:lines() do
    if line ~= "" then
      local method, path = line:match("^(%u+)%s+(%S+)$")
      if not method then
        method, path = "GET", line
      end
      table.insert(requests, wrk.format(method, path))
    end
  end
  file:close()
  assert(#requests > 0, "empty paths file")
  local share = math.floor(#requests / math.max(counter, 1))
  position = ((thread_index or 0) * share) % #requests + 1
end

function request()
  local r = requests[position]
  position = position % #requests + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
end
