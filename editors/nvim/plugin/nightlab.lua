-- Nightlab's commands, defined when the plugin is on the runtimepath (lua/nightlab/init.lua explains
-- the install). require("nightlab").setup({ cmd = ... }) attaches buffers automatically; the commands
-- work without it, with the default server command (`nightlab lsp` on PATH).
if vim.g.loaded_nightlab then
  return
end
vim.g.loaded_nightlab = true

local function nl()
  return require("nightlab")
end

vim.api.nvim_create_user_command("NightlabStart", function(o)
  nl().start(o.fargs)
end, { nargs = "*", desc = "Nightlab: start the loop (key=value overrides, e.g. agent=offline maxExperiments=3)" })

vim.api.nvim_create_user_command("NightlabStop", function()
  nl().stop()
end, { desc = "Nightlab: stop the loop" })

vim.api.nvim_create_user_command("NightlabStatus", function()
  nl().status()
end, { desc = "Nightlab: the loop's state, best and baseline" })

vim.api.nvim_create_user_command("NightlabApplyBest", function()
  nl().apply_best()
end, { desc = "Nightlab: the best commit's code into your buffers, three-way" })

vim.api.nvim_create_user_command("NightlabDiff", function(o)
  nl().diff(o.args ~= "" and o.args or nil)
end, { nargs = "?", desc = "Nightlab: an experiment's diff (default: the best)" })
