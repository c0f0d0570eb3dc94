-- wrk script: each request carries the next Authorization header of a file (one per line,
-- "Bearer <token>"), round robin, so that no request repeats the token of the one before
-- (with more tokens than the server's verified-token cache holds, every request is a miss).
--   wrk ... -s bench/wrk_tokens.lua URL -- <token file>
local headers = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then headers[#headers + 1] = line end
  end
  i = math.random(#headers)
end

function request()
  i = i % #headers + 1
  return wrk.format(nil, nil, { ["Authorization"] = headers[i], ["Accept"] = "application/json" })
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.requests / secs, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
