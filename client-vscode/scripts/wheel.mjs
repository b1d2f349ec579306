// Builds the nightlab wheel that the .vsix carries (dist/wheels/), so the extension can install the
// language server into an interpreter that lacks it (the wheel itself; pip fetches its dependencies
// such as torch as usual). Python: $NIGHTLAB_PYTHON, else the
// repository's .venv (./dev.sh setup), else python3; it needs setuptools (no build isolation, so
// building needs no network).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const venv = join(repo, ".venv", "bin", "python");
const python = process.env.NIGHTLAB_PYTHON || (existsSync(venv) ? venv : "python3");
const out = resolve(here, "..", "dist", "wheels");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
execFileSync(python, ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, repo], { stdio: "inherit" });
const wheels = readdirSync(out).filter((f) => f.endsWith(".whl"));
if (wheels.length !== 1) throw new Error(`expected one wheel in ${out}, found ${wheels.join(", ") || "none"}`);
console.log(`wheel: dist/wheels/${wheels[0]}`);
