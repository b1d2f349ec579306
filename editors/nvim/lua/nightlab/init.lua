-- Nightlab for Neovim (0.7+): the language server started and attached for the buffers of a workspace
-- that has a nightlab.toml; the loop's notifications through vim.notify; code lenses refreshed on the
-- loop's events; progress and the loop's state for the statusline; commands to drive the loop.
--
-- Install: put this folder (editors/nvim of the Nightlab repository) on the runtimepath,
--   vim.opt.runtimepath:append("/path/to/nightlab/editors/nvim")
-- or with a plugin manager, e.g. lazy.nvim:
--   { dir = "/path/to/nightlab/editors/nvim", config = function() require("nightlab").setup({}) end }
-- or packer: use({ "/path/to/nightlab/editors/nvim", config = ... }); vim-plug: Plug '/path/.../editors/nvim'.
-- Then, in your config:
--   require("nightlab").setup({ cmd = { "/path/to/.venv/bin/nightlab", "lsp" } })
--   vim.o.statusline = "%f %m%=%{v:lua.require'nightlab'.statusline()} %l:%c"
--
-- Commands (plugin/nightlab.lua defines them; they work before setup() too, with the defaults):
--   :NightlabStart [key=value ...]  start the loop (keys as nightlab.loop.start's: agent=offline
--                                   maxExperiments=3 budgetSeconds=8 policy=strict ...)
--   :NightlabStop                   stop it (the running experiments are recorded as interrupted)
--   :NightlabStatus                 the loop's state, best, baseline and cost, as a notification
--   :NightlabApplyBest              the best commit's code into your buffers, three-way (one undo step);
--                                   hunks that meet your own edits are left out and named
--   :NightlabDiff [N]               experiment N's change (default: the best) in a diff tab
--
-- Neovim 0.7 has no vim.lsp.start and no codeLens/refresh support, so: vim.lsp.start_client plus
-- buf_attach_client there (vim.lsp.start from 0.8), and vim.lsp.codelens.refresh() on the loop's
-- events. Nothing here blocks: every request is asynchronous.

local M = {}

local defaults = {
  cmd = { "nightlab", "lsp" },
  -- the filetypes whose buffers are attached when their folder (or one above it) has a nightlab.toml
  filetypes = { "python", "markdown", "toml" },
  -- a notification for each finished experiment (keep / discard / crash / interrupted)
  notify_experiments = true,
  init_options = {},
}

M.config = vim.deepcopy(defaults)

-- per workspace root: the client id, the last loop state, running experiments' progress
local roots = {}
local progress = {} -- token -> { title, message, percentage }

local function notify(text, level)
  vim.schedule(function()
    vim.notify("Nightlab: " .. text, level or vim.log.levels.INFO, { title = "Nightlab" })
  end)
end

local function find_root(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr or 0)
  local dir = name ~= "" and vim.fn.fnamemodify(name, ":p:h") or vim.fn.getcwd()
  local found = vim.fn.findfile("nightlab.toml", dir .. ";")
  if found == "" then
    return nil
  end
  return vim.fn.fnamemodify(found, ":p:h")
end

local function entry(root)
  roots[root] = roots[root] or { state = nil }
  return roots[root]
end

-- The code lenses of every buffer a nightlab client is attached to, asked for again. Not through
-- vim.lsp.codelens.refresh(): in 0.7 it serves the current buffer only, and a refresh sent before the
-- client is attached is never answered and blocks every later one for that buffer.
local function refresh_lenses()
  vim.schedule(function()
    for _, e in pairs(roots) do
      local c = e.client_id and vim.lsp.get_client_by_id(e.client_id)
      if c and c.initialized and not c.is_stopped() then
        for _, buf in ipairs(vim.api.nvim_list_bufs()) do
          if vim.api.nvim_buf_is_loaded(buf) and vim.lsp.buf_is_attached(buf, c.id) then
            local params = { textDocument = { uri = vim.uri_from_bufnr(buf) } }
            c.request("textDocument/codeLens", params, function(err, result, ctx, config)
              vim.lsp.codelens.on_codelens(err, result, ctx, config)
            end, buf)
          end
        end
      end
    end
  end)
end

M.refresh_lenses = refresh_lenses

-- ------------------------------------------------------------------------------ the loop's events

local function fmt_metric(v)
  return v ~= nil and v ~= vim.NIL and string.format("%.4f", v) or "-"
end

local function status_text(s)
  local tag = type(s.tag) == "string" and s.tag or ""
  local parts = { (tag ~= "" and ("[" .. tag .. "] ") or "") .. tostring(s.state) }
  if s.best ~= nil and s.best ~= vim.NIL then
    table.insert(parts, "best " .. fmt_metric(s.best.metric) .. " (#" .. s.best.number .. ")")
  end
  if s.baseline ~= nil and s.baseline ~= vim.NIL then
    table.insert(parts, "baseline " .. fmt_metric(s.baseline))
  end
  table.insert(parts, tostring(s.experimentsRun or 0) .. " experiments")
  if s.running and #s.running > 0 then
    table.insert(parts, "running #" .. table.concat(s.running, ", #"))
  end
  if s.costUsd and s.costUsd > 0 then
    table.insert(parts, string.format("$%.2f", s.costUsd))
  end
  if s.reason and s.reason ~= "" then
    table.insert(parts, s.reason)
  end
  return table.concat(parts, " | ")
end

local function on_loop_state(_, result)
  if type(result) ~= "table" then
    return
  end
  local e = entry(result.root ~= "" and result.root or "?")
  local before = e.state and e.state.state
  e.state = result
  M.last_state = result
  -- not every proposing / running / deciding of an overnight loop: its start, its pauses and its end
  local quiet = { proposing = true, running = true, deciding = true }
  local started = before == nil or before == "idle" or before == "stopped" or before == "errored"
  if before ~= result.state and (not quiet[result.state] or started) then
    local level = result.state == "errored" and vim.log.levels.ERROR or vim.log.levels.INFO
    notify("loop " .. status_text(result), level)
  end
  refresh_lenses()
end

local function on_finished(_, result)
  local exp = type(result) == "table" and (result.experiment or result) or {}
  if M.config.notify_experiments and exp.number then
    local level = exp.status == "crash" and vim.log.levels.WARN or vim.log.levels.INFO
    local text = string.format("#%d %s %s", exp.number, exp.status or "?", fmt_metric(exp.metric))
    if exp.description and exp.description ~= "" then
      text = text .. " (" .. exp.description .. ")"
    end
    if result.reason and result.reason ~= "" then
      text = text .. ": " .. result.reason
    end
    if result.newBest then
      text = text .. "; new best"
    end
    notify(text, level)
  end
  refresh_lenses()
end

local function on_started(_, _)
  refresh_lenses()
end

local function on_log_message(err, result, ctx, config)
  -- the server says the loop's messages (rate limits, a disk that is full, the loop's end) as
  -- window/logMessage "nightlab: ..."; Neovim would only log them
  if type(result) == "table" and type(result.message) == "string" and result.message:find("^nightlab: ") then
    local levels = { vim.log.levels.ERROR, vim.log.levels.WARN, vim.log.levels.INFO, vim.log.levels.DEBUG }
    notify(result.message:sub(11), levels[result.type] or vim.log.levels.INFO)
  end
  return vim.lsp.handlers["window/logMessage"](err, result, ctx, config)
end

local function on_progress(err, result, ctx, config)
  if type(result) == "table" and result.token ~= nil and type(result.value) == "table" then
    local v, token = result.value, tostring(result.token)
    if v.kind == "end" then
      progress[token] = nil
    else
      local p = progress[token] or {}
      p.title = v.title or p.title
      p.message = v.message or p.message
      p.percentage = v.percentage or p.percentage
      progress[token] = p
    end
    vim.schedule(function()
      vim.cmd("redrawstatus")
    end)
  end
  local default = vim.lsp.handlers["$/progress"]
  if default then
    return default(err, result, ctx, config)
  end
end

-- ------------------------------------------------------------------------------ the client

local function client_config(root)
  return {
    name = "nightlab",
    cmd = M.config.cmd,
    cmd_cwd = root,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = vim.fn.fnamemodify(root, ":t") } },
    init_options = M.config.init_options,
    handlers = {
      ["nightlab/loopState"] = on_loop_state,
      ["nightlab/experimentFinished"] = on_finished,
      ["nightlab/experimentStarted"] = on_started,
      ["nightlab/experimentProgress"] = function() end, -- the statusline reads $/progress
      ["window/logMessage"] = on_log_message,
      ["$/progress"] = on_progress,
    },
    on_exit = function(code, signal)
      local e = roots[root]
      if e then
        e.client_id = nil
      end
      if code ~= 0 then
        notify(string.format("the language server exited (code %s, signal %s); see :LspLog", code, signal),
          vim.log.levels.WARN)
      end
    end,
  }
end

local function live(id)
  local c = id and vim.lsp.get_client_by_id(id)
  return c and not c.is_stopped() and c or nil
end

-- The client of the workspace `bufnr` is in (started when there is none), attached to the buffer.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local root = find_root(bufnr)
  if root == nil then
    return nil
  end
  local e = entry(root)
  if not live(e.client_id) then
    if vim.lsp.start then -- 0.8+: reuses a client of the same name and root
      e.client_id = vim.lsp.start(client_config(root), { bufnr = bufnr })
      return e.client_id
    end
    e.client_id = vim.lsp.start_client(client_config(root))
  end
  if e.client_id and vim.api.nvim_buf_get_name(bufnr) ~= "" then
    vim.lsp.buf_attach_client(bufnr, e.client_id)
  end
  return e.client_id
end

-- The client for commands: the current buffer's workspace, else the working directory's.
local function current_client()
  local id = M.attach(0)
  if id == nil then
    notify("no nightlab.toml in this folder or above it: run `nightlab init` first", vim.log.levels.WARN)
    return nil
  end
  return vim.lsp.get_client_by_id(id)
end

-- workspace/executeCommand, asynchronous; `done(result)` on success, errors said plainly.
function M.execute(name, arg, done)
  local client = current_client()
  if client == nil then
    return
  end
  local function send()
    client.request("workspace/executeCommand", { command = name, arguments = { arg or vim.empty_dict() } },
      function(err, result)
        if err then
          notify(err.message or vim.inspect(err), vim.log.levels.ERROR)
        elseif done then
          done(result)
        end
      end, vim.api.nvim_get_current_buf())
  end
  if client.initialized then
    send()
  else -- just started: wait (without blocking) for initialize
    local timer = vim.loop.new_timer()
    local waited = 0
    timer:start(50, 50, vim.schedule_wrap(function()
      waited = waited + 50
      if client.initialized or waited > 30000 or client.is_stopped() then
        timer:stop()
        timer:close()
        if client.initialized then
          send()
        else
          notify("the language server did not start; see :LspLog", vim.log.levels.ERROR)
        end
      end
    end))
  end
end

-- ------------------------------------------------------------------------------ commands

local function parse_args(fargs)
  local out = {}
  for _, a in ipairs(fargs or {}) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k == nil then
      notify("arguments are key=value (for example agent=offline maxExperiments=3): " .. a, vim.log.levels.ERROR)
      return nil
    end
    if v == "true" or v == "false" then
      out[k] = v == "true"
    else
      out[k] = tonumber(v) or v
    end
  end
  return out
end

function M.start(fargs)
  local args = parse_args(fargs)
  if args == nil then
    return
  end
  M.execute("nightlab.loop.start", args, function(r)
    notify((r and r.message or "starting the loop") .. (r and r.tag and r.tag ~= "" and (" (tag " .. r.tag .. ")") or ""))
  end)
end

function M.stop()
  M.execute("nightlab.loop.stop", nil, function(r)
    notify(r and r.message or "stopped")
  end)
end

function M.status()
  M.execute("nightlab.loop.status", nil, function(s)
    if s then
      M.last_state = s
      entry(s.root ~= "" and s.root or "?").state = s
      notify(status_text(s))
    end
  end)
end

function M.diff(number)
  local function show(n)
    M.execute("nightlab.experiment.showDiff", { number = n }, function(d)
      M.open_diff(d)
    end)
  end
  if number then
    return show(tonumber(number))
  end
  M.execute("nightlab.loop.status", nil, function(s)
    if s and s.best ~= nil and s.best ~= vim.NIL then
      show(s.best.number)
    else
      notify("there is no best experiment yet", vim.log.levels.WARN)
    end
  end)
end

-- An ExperimentDiff in a new tab: each changed file's parent and experiment side by side (:diffthis).
function M.open_diff(d)
  if type(d) ~= "table" or type(d.files) ~= "table" or #d.files == 0 then
    notify("experiment changed no file", vim.log.levels.WARN)
    return
  end
  for _, f in ipairs(d.files) do
    vim.cmd("tabnew")
    local function scratch(text, name)
      local buf = vim.api.nvim_get_current_buf()
      vim.bo[buf].buftype = "nofile"
      vim.bo[buf].bufhidden = "wipe"
      vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(text ~= vim.NIL and text or "", "\n", true))
      pcall(vim.api.nvim_buf_set_name, buf, name)
      vim.bo[buf].filetype = "python"
      vim.bo[buf].modifiable = false
      vim.cmd("diffthis")
    end
    scratch(f.parent, string.format("nightlab://%d/parent/%s", d.number, f.path))
    vim.cmd("vnew")
    scratch(f.experiment, string.format("nightlab://%d/%s", d.number, f.path))
  end
end

function M.apply_best()
  M.execute("nightlab.experiment.applyBest", nil, function(r)
    if r == nil then
      return
    end
    local left = (type(r.conflicts) == "table" and #r.conflicts > 0) or (r.message and r.message:find("left out") ~= nil)
    notify(r.message or ("applied the best #" .. tostring(r.number)), left and vim.log.levels.WARN or nil)
    if left then
      notify("the hunks left out are in :NightlabDiff " .. r.number, vim.log.levels.WARN)
    end
    refresh_lenses()
  end)
end

-- For the statusline: "nightlab running #5 42% step 120 | best 0.9812", "" outside a workspace.
function M.statusline()
  local s = M.last_state
  local parts = {}
  for _, p in pairs(progress) do
    if p.title and p.title:find("^Nightlab") then
      table.insert(parts, p.title:gsub("^Nightlab ", "") .. " " .. tostring(p.percentage or 0) .. "%"
        .. (p.message and (" " .. p.message) or ""))
    end
  end
  if s == nil and #parts == 0 then
    return ""
  end
  table.sort(parts)
  local head = "nightlab " .. (s and s.state or "")
  if s and s.best ~= nil and s.best ~= vim.NIL then
    table.insert(parts, "best " .. fmt_metric(s.best.metric))
  end
  return head .. (#parts > 0 and (" " .. table.concat(parts, " | ")) or "")
end

-- Code lenses and code actions of the server that name a client-side command: run them here.
local function register_commands()
  vim.lsp.commands["nightlab.experiment.showDiff"] = function(command)
    local arg = command.arguments and command.arguments[1] or {}
    M.diff(arg.number)
  end
  vim.lsp.commands["nightlab.experiment.applyBest"] = function()
    M.apply_best()
  end
  vim.lsp.commands["nightlab.experiment.accept"] = function(command)
    M.execute("nightlab.experiment.accept", command.arguments and command.arguments[1], function(r)
      notify(r and r.message or "accepted")
      refresh_lenses()
    end)
  end
end

register_commands()

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup("nightlab", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd({ "BufEnter", "InsertLeave" }, {
    group = group,
    callback = function(args)
      local root = find_root(args.buf)
      if root and live(entry(root).client_id) then
        refresh_lenses()
      end
    end,
  })
  -- buffers opened before setup()
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.tbl_contains(M.config.filetypes, vim.bo[buf].filetype) then
      M.attach(buf)
    end
  end
end

return M
