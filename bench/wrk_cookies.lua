-- wrk script: each request carries the next Cookie header of a file (one per line), round
-- robin, so that consecutive requests of a connection never repeat a cookie.
--   wrk ... -s bench/wrk_cookies.lua URL -- <cookie file>
-- Every request is formatted once, in init: formatting one per request in Lua made wrk,
-- not the server, the bottleneck of this row.
local requests = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format(nil, nil, { ["Cookie"] = line, ["Accept"] = "application/json" })
    end
  end
  -- each wrk thread starts at its own offset
  i = math.random(#requests)
end

function request()
  i = i % #requests + 1
  return requests[i]
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.requests / secs, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
