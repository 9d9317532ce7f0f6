-- wrk script for executor-serve: every reply's body is checked against the
-- answer known for its request.
--
-- Each request posts one record "ID,TEXT" to /classify; TEXT is picked by ID
-- from the table below, so the reply must be "ID,LABEL\n" with LABEL its
-- label (the word table in tests/data/words.txt). A reply for an ID that is
-- not waiting for one (a duplicate, another request's answer) is wrong too.
-- With docs=N, one request in N is a document: the header row and three
-- records, answered by three lines in order.
--
-- Arguments (after --): docs=N, think=MS (mean pause before each request,
-- drawn from an exponential: an open load of connections/(MS + latency)
-- requests/s). done() prints one line starting with "CHECK".

local texts = {
    {"an apple and a pear", "fruit"},
    {"the dog chased the cat", "animal"},
    {"a saw, a drill and a wrench", "tool"},
    {"nothing to see here", "unknown"},
    {"cherry plum owl owl horse", "animal"},
}

local threads = {}
local counter = 0

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

local docs, think = 0, 0
local base
local waiting = {}    -- ID -> "one" or "doc" while its reply is due
-- Globals: done() reads them from each thread with thread:get().
ok, wrong, rejected, other, first_wrong = 0, 0, 0, 0, ""

-- A pause before each request: exponential, rounded up or down at random so
-- that its mean stays exact although wrk takes whole milliseconds.
local function think_delay()
    local x = -math.log(1 - math.random()) * think
    local f = math.floor(x)
    if math.random() < x - f then f = f + 1 end
    return f
end

function init(args)
    for i = 0, #args do -- wrk numbers the arguments from 0
        local k, v = (args[i] or ""):match("^(%w+)=(%d+%.?%d*)$")
        if k == "docs" then docs = tonumber(v) end
        if k == "think" then think = tonumber(v) end
    end
    base = tid * 1000000000
    math.randomseed(tid * 7919 + os.time())
    -- wrk looks for delay() after init(); without it there is no pause at all.
    if think > 0 then delay = think_delay end
end

local function text_of(id)
    return texts[id % #texts + 1]
end

local headers = {["Content-Type"] = "text/csv"}

function request()
    counter = counter + 1
    local id = base + counter * 10
    if docs > 0 and counter % docs == 0 then
        local body = "id,text"
        for k = 1, 3 do
            body = body .. "\n" .. (id + k) .. ",\"" .. text_of(id + k)[1] .. "\""
        end
        waiting[id + 1] = "doc"
        return wrk.format("POST", "/classify", headers, body .. "\n")
    end
    waiting[id] = "one"
    return wrk.format("POST", "/classify", headers, id .. ",\"" .. text_of(id)[1] .. "\"")
end

local function bad(body)
    wrong = wrong + 1
    if first_wrong == "" then first_wrong = body:gsub("\n", "\\n"):sub(1, 120) end
end

function response(status, hdrs, body)
    if status == 503 then
        rejected = rejected + 1 -- the window was full: deliberate, counted apart
        return
    elseif status ~= 200 then
        other = other + 1
        if first_wrong == "" then first_wrong = status .. " " .. body:sub(1, 100) end
        return
    end
    local id = tonumber(body:match("^(%d+),"))
    if not id or not waiting[id] then return bad(body) end
    local kind = waiting[id]
    waiting[id] = nil
    local want = ""
    local n = kind == "doc" and 3 or 1
    for k = 0, n - 1 do
        want = want .. (id + k) .. "," .. text_of(id + k)[2] .. "\n"
    end
    if body == want then ok = ok + 1 else bad(body) end
end

function done(summary, latency, requests)
    local t = {ok = 0, wrong = 0, rejected = 0, other = 0}
    local sample = ""
    for _, th in ipairs(threads) do
        for k in pairs(t) do t[k] = t[k] + th:get(k) end
        if sample == "" then sample = th:get("first_wrong") end
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "CHECK requests=%d rps=%.0f p50_us=%d p99_us=%d max_us=%d ok=%d wrong=%d rejected=%d " ..
        "other=%d connect=%d read=%d write=%d timeout=%d first_wrong=%q\n",
        summary.requests, summary.requests / secs, latency:percentile(50),
        latency:percentile(99), latency.max, t.ok, t.wrong, t.rejected, t.other,
        e.connect, e.read, e.write, e.timeout, sample))
end
