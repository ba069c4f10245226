-- mix.lua - the one wrk script every scenario uses.
--
--   wrk ... -s bench/mix.lua http://127.0.0.1:PORT -- WEIGHT:FILE [WEIGHT:FILE ...]
--
-- Each FILE holds one request per line, written by bench.py:
--   GET <path>
--   POST <path> <json body>
-- init() turns every line into a ready HTTP request string once, so that
-- request() only draws a random number and returns a cached string (wrk's
-- advice for fast servers). Each request picks a FILE with probability
-- WEIGHT / sum(WEIGHT), then a random line of it: e.g. "45:pages 45:lists
-- 10:sends" is the mixed scenario.
--
-- done() prints one machine-readable line for bench.py:
--   BENCH_RESULT {"requests":..,"duration_us":..,"p50_us":..,"p99_us":..,...}
-- There is no response() function on purpose: defining one makes wrk parse
-- every response in Lua, which would slow the client down. Errors are the
-- counters wrk keeps anyway (status > 399, socket errors).

local pools = {}   -- { {weight = w, reqs = {...}, n = N}, ... }
local total = 0
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_no", counter)
end

local function load(weight, file)
   local reqs = {}
   local f = assert(io.open(file, "r"), "mix.lua: cannot open " .. file)
   for line in f:lines() do
      local method, rest = line:match("^(%u+) (.+)$")
      if method == "GET" then
         reqs[#reqs + 1] = wrk.format("GET", rest)
      elseif method == "POST" then
         local path, body = rest:match("^(%S+) (.+)$")
         reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
      end
   end
   f:close()
   assert(#reqs > 0, "mix.lua: no requests in " .. file)
   pools[#pools + 1] = {weight = weight, reqs = reqs, n = #reqs}
   total = total + weight
end

function init(args)
   math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
   for _, arg in ipairs(args) do
      local w, file = arg:match("^(%d+%.?%d*):(.+)$")
      assert(w, "mix.lua: arguments are WEIGHT:FILE, got " .. arg)
      load(tonumber(w), file)
   end
   assert(#pools > 0, "mix.lua: give at least one WEIGHT:FILE after --")
end

function request()
   local pool = pools[1]
   if #pools > 1 then
      local r = math.random() * total
      for i = 1, #pools do
         pool = pools[i]
         r = r - pool.weight
         if r < 0 then break end
      end
   end
   return pool.reqs[math.random(pool.n)]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
