-- Argo CD health check of trainserve.io/ModelService (Argo CD's contract: the resource is the global `obj`; the
-- script returns a table with `status` and `message`; docs/operator-manual/health.md). It reads what trainserve
-- writes for kstatus: status.observedGeneration and the conditions Stalled, Reconciling and Ready. A service that
-- answers while it rolls to a new Ray cluster or loads a new model is Progressing, like a Deployment mid-rollout.
-- One that does not answer yet because its pods fail (PodsHealthy=False: image pull, crash loop, OOM kill) or wait
-- for a node (Scheduled=False) is Progressing with what the pods say, as Argo CD shows such a Deployment (Degraded
-- comes from the operator's Stalled, as for kstatus). A service that answers while a replica fails stays Healthy,
-- and the message says what fails.
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
local reconciling = condition(conditions, "Reconciling")
local ready = condition(conditions, "Ready")
local pods_healthy = condition(conditions, "PodsHealthy")
local scheduled = condition(conditions, "Scheduled")
local pods_failing = pods_healthy ~= nil and pods_healthy.status == "False"
local unscheduled = scheduled ~= nil and scheduled.status == "False"
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled)
elseif pods_failing and not is_true(ready) then
  hs.status = "Progressing"
  hs.message = text(pods_healthy)
elseif unscheduled and not is_true(ready) then
  hs.status = "Progressing"
  hs.message = text(scheduled)
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = text(reconciling)
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = text(ready)
  if pods_failing then
    hs.message = hs.message .. "; " .. text(pods_healthy)
  elseif unscheduled then
    hs.message = hs.message .. "; " .. text(scheduled)
  end
elseif ready ~= nil then
  hs.status = "Progressing"
  hs.message = text(ready)
else
  hs.status = "Progressing"
  hs.message = "waiting for the trainserve operator"
end
return hs
