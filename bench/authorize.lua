-- wrk script: `authorize` check-ins of many gym members (read + evaluate).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RULEHOST_TOKEN")
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"action":"check_in","actor":{"kind":"self_service","id":"m-%d"},"subject":{"kind":"customer","id":"m-%d"}}',
    n % 1000, n % 1000)
  return wrk.format(nil, "/v1/operators/demo-gym/hooks/authorize", nil, body)
end
