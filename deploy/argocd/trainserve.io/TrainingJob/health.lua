-- Argo CD health check of trainserve.io/TrainingJob (Argo CD's contract: the resource is the global `obj`; the
-- script returns a table with `status` and `message`; docs/operator-manual/health.md). It reads what trainserve
-- writes for kstatus: status.observedGeneration and the conditions Stalled, Ready, Reconciling and Suspended. A job
-- suspended by runPolicy.suspend or waiting in a Kueue queue is Suspended, as Argo CD shows a suspended Job. While it
-- runs, PodsHealthy=False (an image that does not pull, a crash loop, an OOM kill) or Scheduled=False (waiting for
-- GPUs, a refused pod) is Progressing with what the pods say, as Argo CD shows a Deployment whose pods fail to start
-- (Degraded comes from the operator's Stalled, as for kstatus).
-- Only Lua's base and table libraries are used: Argo CD opens no others unless useOpenLibs is set.
local hs = {}
local function condition(conditions, wanted)
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end
local function is_true(c)
  return c ~= nil and c.status == "True"
end
local function text(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the trainserve operator to act on the latest spec"
  return hs
end
local conditions = status.conditions or {}
local stalled = condition(conditions, "Stalled")
local ready = condition(conditions, "Ready")
local reconciling = condition(conditions, "Reconciling")
local suspended = condition(conditions, "Suspended")
local pods_healthy = condition(conditions, "PodsHealthy")
local scheduled = condition(conditions, "Scheduled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled)
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = text(ready)
elseif is_true(suspended) then
  hs.status = "Suspended"
  hs.message = text(suspended)
elseif pods_healthy ~= nil and pods_healthy.status == "False" then
  hs.status = "Progressing"
  hs.message = text(pods_healthy)
elseif scheduled ~= nil and scheduled.status == "False" then
  hs.status = "Progressing"
  hs.message = text(scheduled)
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = text(reconciling)
else
  hs.status = "Progressing"
  hs.message = "phase " .. (status.phase or "Pending")
end
return hs
