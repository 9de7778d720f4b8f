-- wrk script: HTTP announces with varying info_hash (from HASHFILE), peer_id and port.
local hashes = {}
local f = io.open(os.getenv("HASHFILE"), "r")
for line in f:lines() do
  if #line == 40 then
    hashes[#hashes + 1] = line:gsub("%x%x", function(h) return "%" .. h end)
  end
end
f:close()
local path = os.getenv("ANNOUNCE_PATH") or "/announce"
local n = 0
math.randomseed(os.time())
request = function()
  n = n + 1
  local ih = hashes[math.random(#hashes)]
  local pid = string.format("-BT0001-%012d", math.random(0, 999))
  local port = 1024 + math.random(0, 999)
  local left = (math.random(4) == 1) and 0 or 1000
  return wrk.format("GET", path .. "?info_hash=" .. ih .. "&peer_id=" .. pid .. "&port=" .. port ..
    "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50")
end
done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors_connect":%d,"errors_read":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.status, summary.errors.timeout))
end
