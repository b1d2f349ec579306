-- Headless Neovim (0.7.2 and later) as a second, real LSP client of the Nightlab server.
-- Run by tests/test_neovim.py as:  nvim --headless --clean -c "luafile tests/nvim_client.lua"
--
-- Environment:
--   NIGHTLAB_PYTHON   the Python that runs `-m nightlab.server`
--   NIGHTLAB_WS       the workspace (a stand-in workspace whose loop already ran)
--   NIGHTLAB_OUT      a folder for the results: applied.py (the buffer after the code action) and
--                     summary.json (titles, the applied experiment, notifications seen, any error)
--   NIGHTLAB_WAIT_MS  how long to wait for the loop to stop (default 60000)
--
-- 0.7 API only: vim.lsp.start_client + buf_attach_client (vim.lsp.start is 0.8+), handlers for
-- custom notifications in the start_client config, client.request_sync for requests, and
-- vim.lsp.util.apply_workspace_edit(edit, offset_encoding).

local python = assert(os.getenv("NIGHTLAB_PYTHON"), "NIGHTLAB_PYTHON is not set")
local ws = assert(os.getenv("NIGHTLAB_WS"), "NIGHTLAB_WS is not set")
local out = assert(os.getenv("NIGHTLAB_OUT"), "NIGHTLAB_OUT is not set")
local wait_ms = tonumber(os.getenv("NIGHTLAB_WAIT_MS") or "60000")

local summary = {
  nvim = tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch,
  titles = {},
  states = {},
  finished = {},
  steps = {},
}

local function step(text)
  table.insert(summary.steps, text)
end

local function write_summary()
  vim.fn.writefile({ vim.fn.json_encode(summary) }, out .. "/summary.json")
end

local function request(client, method, params, timeout_ms, bufnr)
  local res, err = client.request_sync(method, params, timeout_ms or 20000, bufnr)
  if res == nil then
    error(method .. ": no answer (" .. tostring(err) .. ")")
  end
  if res.err ~= nil then
    error(method .. ": " .. vim.inspect(res.err))
  end
  return res.result
end

local function main()
  vim.lsp.set_log_level("info")
  summary.log = vim.lsp.get_log_path()

  local client_id = vim.lsp.start_client({
    name = "nightlab",
    cmd = { python, "-m", "nightlab.server" },
    cmd_cwd = ws,
    root_dir = ws,
    workspace_folders = { { uri = vim.uri_from_fname(ws), name = "ws" } },
    handlers = {
      ["nightlab/loopState"] = function(_, result)
        table.insert(summary.states, result.state)
      end,
      ["nightlab/experimentFinished"] = function(_, result)
        local exp = result.experiment or result
        table.insert(summary.finished, { number = exp.number, status = exp.status })
      end,
    },
    on_exit = function(code, signal)
      summary.server_exit = { code = code, signal = signal }
    end,
  })
  assert(client_id, "vim.lsp.start_client returned nil")
  step("started client " .. client_id)

  vim.cmd("edit " .. vim.fn.fnameescape(ws .. "/train.py"))
  local bufnr = vim.api.nvim_get_current_buf()
  assert(vim.lsp.buf_attach_client(bufnr, client_id), "buf_attach_client failed")

  local client
  local ok = vim.wait(30000, function()
    client = vim.lsp.get_client_by_id(client_id)
    return client ~= nil and client.initialized == true
  end, 50)
  assert(ok, "the server did not initialize within 30 s")
  summary.offset_encoding = client.offset_encoding
  step("initialized, offset encoding " .. tostring(client.offset_encoding))

  -- a code action on line 0: the kept experiments that can be applied to this buffer
  local uri = vim.uri_from_bufnr(bufnr)
  local actions = request(client, "textDocument/codeAction", {
    textDocument = { uri = uri },
    range = { start = { line = 0, character = 0 }, ["end"] = { line = 0, character = 0 } },
    context = { diagnostics = {} },
  }, 30000, bufnr) or {}
  local chosen
  for _, a in ipairs(actions) do
    table.insert(summary.titles, a.title)
    if chosen == nil and a.title:find("^Apply experiment #") and a.edit ~= nil then
      chosen = a
    end
  end
  assert(chosen, "no 'Apply experiment #' action among " .. #actions)
  summary.applied_title = chosen.title
  summary.applied_number = tonumber(chosen.title:match("^Apply experiment #(%d+)"))
  vim.lsp.util.apply_workspace_edit(chosen.edit, client.offset_encoding or "utf-16")
  local lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false)
  vim.fn.writefile(lines, out .. "/applied.py") -- one NL after each line: the file as :w writes it
  summary.applied_path = out .. "/applied.py"
  step("applied " .. chosen.title)

  -- the loop, by command: one more experiment; wait for the custom notification that it stopped
  local started = request(client, "workspace/executeCommand", {
    command = "nightlab.loop.start",
    arguments = { { agent = "offline", maxExperiments = 1, policy = "strict" } },
  }, 30000)
  summary.start_result = started
  step("loop started")
  local stopped = vim.wait(wait_ms, function()
    return vim.tbl_contains(summary.states, "stopped") or vim.tbl_contains(summary.states, "errored")
  end, 50)
  summary.stopped = stopped
  step("loop " .. (stopped and "stopped" or "did not stop in time"))

  -- a clean shutdown: the server must answer `shutdown` and exit on `exit`
  client.stop()
  vim.wait(10000, function() return summary.server_exit ~= nil end, 50)
end

local ok, err = xpcall(main, debug.traceback)
if not ok then
  summary.error = tostring(err)
end
write_summary()
vim.cmd("qa!")
