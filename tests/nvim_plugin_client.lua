-- Headless Neovim driving the Nightlab plugin (editors/nvim) through its commands, as a person would.
-- Run by tests/test_neovim_plugin.py as:
--   nvim --headless --clean --cmd "set rtp^=editors/nvim" -c "luafile tests/nvim_plugin_client.lua"
--
-- Environment: NIGHTLAB_PYTHON (the Python that runs `-m nightlab.server`), NIGHTLAB_WS (a stand-in
-- workspace), NIGHTLAB_OUT (summary.json and buffer.py go there), NIGHTLAB_WAIT_MS (default 90000).
-- vim.notify is captured (the plugin's one way to tell the person things); nothing else is stubbed.

local python = assert(os.getenv("NIGHTLAB_PYTHON"), "NIGHTLAB_PYTHON is not set")
local ws = assert(os.getenv("NIGHTLAB_WS"), "NIGHTLAB_WS is not set")
local out = assert(os.getenv("NIGHTLAB_OUT"), "NIGHTLAB_OUT is not set")
local wait_ms = tonumber(os.getenv("NIGHTLAB_WAIT_MS") or "90000")

local summary = { notes = {}, steps = {}, commands = {} }
local function step(text)
  table.insert(summary.steps, text)
end

vim.notify = function(msg, level)
  table.insert(summary.notes, { text = tostring(msg), level = level or vim.log.levels.INFO })
end

local function noted(pattern, from)
  for i = from or 1, #summary.notes do
    if summary.notes[i].text:find(pattern) then
      return i
    end
  end
  return nil
end

local function wait_note(pattern, ms, from)
  local found
  vim.wait(ms, function()
    found = noted(pattern, from)
    return found ~= nil
  end, 50)
  return found
end

local function main()
  summary.nvim = tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch
  for _, c in ipairs({ "NightlabStart", "NightlabStop", "NightlabStatus", "NightlabApplyBest", "NightlabDiff" }) do
    summary.commands[c] = vim.fn.exists(":" .. c) == 2
  end
  local nightlab = require("nightlab")
  nightlab.setup({ cmd = { python, "-m", "nightlab.server" } })
  vim.cmd("edit " .. vim.fn.fnameescape(ws .. "/train.py"))
  local bufnr = vim.api.nvim_get_current_buf()
  local attached = vim.wait(30000, function()
    local clients = vim.lsp.buf_get_clients(bufnr)
    for _, c in pairs(clients) do
      if c.name == "nightlab" and c.initialized then
        return true
      end
    end
    return false
  end, 50)
  assert(attached, "the plugin did not attach a nightlab client to train.py within 30 s")
  step("attached")

  vim.cmd("NightlabStart agent=offline maxExperiments=3 policy=strict")
  local stopped = wait_note("loop .*stopped", wait_ms)
  summary.stopped = stopped ~= nil
  assert(stopped, "no 'stopped' notification from the loop within " .. wait_ms .. " ms")
  step("loop stopped")
  summary.statusline = nightlab.statusline()

  local mark = #summary.notes + 1
  vim.cmd("NightlabStatus")
  local status = wait_note("experiments", 20000, mark)
  assert(status, "no status notification after :NightlabStatus")
  summary.status = summary.notes[status].text
  step("status")

  mark = #summary.notes + 1
  vim.cmd("NightlabApplyBest")
  local applied = wait_note("best", 20000, mark)
  assert(applied, "no notification after :NightlabApplyBest")
  summary.apply = summary.notes[applied].text
  vim.wait(2000, function() return vim.bo[bufnr].modified end, 50)
  vim.fn.writefile(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), out .. "/buffer.py")
  summary.modified = vim.bo[bufnr].modified
  step("apply best")

  -- the lenses, refreshed by the plugin on the loop's events (0.7 cannot be asked to refresh)
  -- asked for by the plugin itself on the loop's events (not by this script)
  vim.wait(5000, function() return #vim.lsp.codelens.get(bufnr) > 0 end, 50)
  summary.lenses = {}
  for _, l in ipairs(vim.lsp.codelens.get(bufnr)) do
    table.insert(summary.lenses, l.command and l.command.title or "")
  end

  for _, c in ipairs(vim.lsp.get_active_clients()) do
    c.stop()
  end
  vim.wait(5000, function() return #vim.lsp.get_active_clients() == 0 end, 50)
end

local ok, err = xpcall(main, debug.traceback)
if not ok then
  summary.error = tostring(err)
end
vim.fn.writefile({ vim.fn.json_encode(summary) }, out .. "/summary.json")
vim.cmd("qa!")
