-- wrk script: durable writes. Each request locks a new member or unlocks
-- one whose lock was acknowledged (read from the lock's answer), so every
-- request is an accepted transition committed to disk, whatever the
-- number of connections per thread.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RULEHOST_TOKEN")

local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

local next_member = 0
local locked = {}
local LOCK = '{"actor":{"kind":"staff","id":"anna"},"reason":"payment_deferral","duration":"14_days"}'
local UNLOCK = '{"actor":{"kind":"staff","id":"anna"},"reason":"paid at the desk"}'
local PREFIX = "/v1/operators/demo-gym/subjects/customer/"

request = function()
  local member = table.remove(locked)
  if member then
    return wrk.format(nil, PREFIX .. member .. "/unlock", nil, UNLOCK)
  end
  next_member = next_member + 1
  return wrk.format(nil, string.format("%st%d-m%d/lock", PREFIX, tid or 0, next_member), nil, LOCK)
end

response = function(status, headers, body)
  if status >= 300 then
    io.stderr:write(string.format("thread %d: %d %s\n", tid, status, body))
    return
  end
  local member = string.match(body, '"kind":"customer%.locked","operator":"[^"]*","seq":%d+,"subject":{"id":"([^"]+)"')
  if member then
    table.insert(locked, member)
  end
end
