-- wrk script for bench/api.py: POST a new pod per request, unique names per wrk thread.
-- TOKEN and NAMESPACE come from the environment.
local token = os.getenv("TOKEN")
local namespace = os.getenv("NAMESPACE")
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  prefix = "w" .. id .. "-"
end

function request()
  counter = counter + 1
  local body = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"' .. prefix .. counter ..
    '","labels":{"app":"bench","tier":"web"}},"spec":{"containers":[{"name":"app","image":"busybox:1.36",' ..
    '"command":["sleep","3600"],"ports":[{"containerPort":8080}],' ..
    '"resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}}'
  return wrk.format("POST", "/api/v1/namespaces/" .. namespace .. "/pods",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
