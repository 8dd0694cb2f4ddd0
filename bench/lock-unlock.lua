-- wrk script: durable writes. Run with as many threads as connections, so
-- each thread's requests are sequential: it locks a member of its own,
-- unlocks it once the lock is answered, then moves to the next member.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RULEHOST_TOKEN")

local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

local member = 0
local locked = false
local LOCK = '{"actor":{"kind":"staff","id":"anna"},"reason":"payment_deferral","duration":"14_days"}'
local UNLOCK = '{"actor":{"kind":"staff","id":"anna"},"reason":"paid at the desk"}'

request = function()
  local path = string.format("/v1/operators/demo-gym/subjects/customer/t%d-m%d/", tid or 0, member)
  if locked then
    return wrk.format(nil, path .. "unlock", nil, UNLOCK)
  end
  return wrk.format(nil, path .. "lock", nil, LOCK)
end

response = function(status, headers, body)
  if status >= 300 then
    io.stderr:write(string.format("thread %d member %d: %d %s\n", tid, member, status, body))
  elseif locked then
    locked = false
    member = member + 1
  else
    locked = true
  end
end
